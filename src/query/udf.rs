//! `attr_may_match(list, key, value)`: a DataFusion scalar function over the generic attribute lists.
//!
//! True for a row whose list holds `key` with a value that may satisfy a condition: when `value` is NULL, any
//! value counts (presence); when it is a string, only a string equal to it or an array (which may contain it).
//! It only narrows candidates; the exact comparison happens in the per-trace evaluator. Written as one pass over
//! the list's child arrays so it costs a string comparison per attribute, not a decoded struct per row.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBuilder, Int8Array, ListArray, StringArray, StructArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::block::schema::kind;

#[derive(Debug, PartialEq, Eq, Hash)]
struct AttrMayMatch {
    signature: Signature,
}

/// The function, ready to call in expressions.
pub fn attr_may_match_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(AttrMayMatch { signature: Signature::any(3, Volatility::Immutable) })
}

/// `attr_may_match(list_column, key, value)` as an expression; `value = None` tests presence.
pub fn attr_may_match(list: Expr, key: &str, value: Option<&str>) -> Expr {
    attr_may_match_udf().call(vec![
        list,
        Expr::Literal(ScalarValue::Utf8(Some(key.to_string())), None),
        Expr::Literal(ScalarValue::Utf8(value.map(str::to_string)), None),
    ])
}

fn scalar_str(v: &ColumnarValue) -> Result<Option<String>> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s)) => {
            Ok(s.clone())
        }
        ColumnarValue::Scalar(ScalarValue::Null) => Ok(None),
        _ => Err(DataFusionError::Execution("attr_may_match: key and value must be string constants".into())),
    }
}

impl ScalarUDFImpl for AttrMayMatch {
    fn name(&self) -> &str {
        "attr_may_match"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [list, key, value] = args.args.as_slice() else {
            return Err(DataFusionError::Execution("attr_may_match takes three arguments".into()));
        };
        let Some(key) = scalar_str(key)? else {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))));
        };
        let value = scalar_str(value)?;
        let list: ArrayRef = list.to_array(args.number_rows)?;
        let list = list
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| DataFusionError::Execution("attr_may_match: first argument is not a list".into()))?;
        let items: &StructArray = list.values().as_struct();
        let field = |name: &str| {
            items
                .column_by_name(name)
                .ok_or_else(|| DataFusionError::Execution(format!("attr_may_match: list items lack {name}")))
        };
        let keys: &StringArray = field("key")?.as_string();
        let kinds: &Int8Array = field("kind")?.as_primitive();
        let strings: &StringArray = field("s")?.as_string();
        let offsets = list.value_offsets();
        let mut out = BooleanBuilder::with_capacity(list.len());
        for row in 0..list.len() {
            if list.is_null(row) {
                out.append_value(false);
                continue;
            }
            let (lo, hi) = (offsets[row] as usize, offsets[row + 1] as usize);
            let hit = (lo..hi).any(|j| {
                keys.value(j) == key
                    && match &value {
                        None => true,
                        Some(v) => match kinds.value(j) {
                            kind::STRING => !strings.is_null(j) && strings.value(j) == v,
                            kind::ARRAY => true,
                            _ => false,
                        },
                    }
            });
            out.append_value(hit);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
