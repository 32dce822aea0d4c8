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
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};

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

/// The item struct of an attribute list, or of a list of events/links whose items carry an `attrs` list.
enum AttrLists<'a> {
    /// `List<Struct<key, kind, s, i, d, b, raw>>`: one list per row.
    Direct(&'a ListArray),
    /// `List<Struct<..., attrs: List<attr>>>`: a list of lists per row.
    Nested(&'a ListArray, &'a ListArray),
}

impl<'a> AttrLists<'a> {
    fn new(list: &'a ListArray) -> Result<Self> {
        let items: &StructArray = list.values().as_struct();
        if items.column_by_name("key").is_some() {
            return Ok(AttrLists::Direct(list));
        }
        let inner = items
            .column_by_name("attrs")
            .and_then(|c| c.as_any().downcast_ref::<ListArray>())
            .ok_or_else(|| DataFusionError::Execution("expected an attribute list column".into()))?;
        Ok(AttrLists::Nested(list, inner))
    }

    /// The attribute item range(s) of `row`, as index ranges into the innermost attribute struct array.
    fn ranges(&self, row: usize) -> Vec<std::ops::Range<usize>> {
        match self {
            AttrLists::Direct(l) => {
                let o = l.value_offsets();
                std::iter::once(o[row] as usize..o[row + 1] as usize).collect()
            }
            AttrLists::Nested(outer, inner) => {
                let (o, i) = (outer.value_offsets(), inner.value_offsets());
                (o[row] as usize..o[row + 1] as usize).map(|j| i[j] as usize..i[j + 1] as usize).collect()
            }
        }
    }

    fn attrs(&self) -> &'a StructArray {
        match self {
            AttrLists::Direct(l) => l.values().as_struct(),
            AttrLists::Nested(_, inner) => inner.values().as_struct(),
        }
    }
}

fn list_arg(v: &ColumnarValue, rows: usize) -> Result<ArrayRef> {
    v.to_array(rows)
}

fn utf8_list(values: Vec<Vec<String>>) -> ArrayRef {
    let mut b = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new());
    for row in values {
        for v in row {
            b.values().append_value(v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// `attr_keys(list)`: the attribute keys of each row (for events and links, of all their items).
#[derive(Debug, PartialEq, Eq, Hash)]
struct AttrKeys {
    signature: Signature,
}

pub fn attr_keys(list: Expr) -> Expr {
    ScalarUDF::new_from_impl(AttrKeys { signature: Signature::any(1, Volatility::Immutable) }).call(vec![list])
}

impl ScalarUDFImpl for AttrKeys {
    fn name(&self) -> &str {
        "attr_keys"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::new_list(DataType::Utf8, true))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [list] = args.args.as_slice() else {
            return Err(DataFusionError::Execution("attr_keys takes one argument".into()));
        };
        let arr = list_arg(list, args.number_rows)?;
        let list = arr
            .as_any()
            .downcast_ref::<ListArray>()
            .ok_or_else(|| DataFusionError::Execution("attr_keys: argument is not a list".into()))?;
        let lists = AttrLists::new(list)?;
        let keys: &StringArray = lists
            .attrs()
            .column_by_name("key")
            .ok_or_else(|| DataFusionError::Execution("attr_keys: items lack key".into()))?
            .as_string();
        let rows = (0..list.len())
            .map(|row| {
                let mut v: Vec<String> =
                    lists.ranges(row).into_iter().flatten().map(|j| keys.value(j).to_string()).collect();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        Ok(ColumnarValue::Array(utf8_list(rows)))
    }
}

/// A typed value rendered for tag-value listings: `type`, then a unit separator, then the value.
pub fn tag_value_text(ty: &str, value: &str) -> String {
    format!("{ty}\u{1f}{value}")
}

/// `attr_values(list, key)`: the values of `key` in each row, typed and rendered (`tag_value_text`); array
/// elements are listed one by one.
#[derive(Debug, PartialEq, Eq, Hash)]
struct AttrValues {
    signature: Signature,
}

pub fn attr_values(list: Expr, key: &str) -> Expr {
    ScalarUDF::new_from_impl(AttrValues { signature: Signature::any(2, Volatility::Immutable) })
        .call(vec![list, Expr::Literal(ScalarValue::Utf8(Some(key.to_string())), None)])
}

fn render_any(v: &opentelemetry_proto::tonic::common::v1::AnyValue, out: &mut Vec<String>) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match &v.value {
        Some(Value::StringValue(s)) => out.push(tag_value_text("string", s)),
        Some(Value::IntValue(i)) => out.push(tag_value_text("int", &i.to_string())),
        Some(Value::DoubleValue(d)) => out.push(tag_value_text("float", &d.to_string())),
        Some(Value::BoolValue(b)) => out.push(tag_value_text("bool", &b.to_string())),
        Some(Value::ArrayValue(a)) => {
            for x in &a.values {
                if !matches!(x.value, Some(Value::ArrayValue(_))) {
                    render_any(x, out);
                }
            }
        }
        _ => {}
    }
}

/// Typed values of one key in an attribute-list column, row by row.
struct ValueReader<'a> {
    lists: AttrLists<'a>,
    keys: &'a StringArray,
    kinds: &'a Int8Array,
    s: &'a StringArray,
    i: &'a arrow::array::Int64Array,
    d: &'a arrow::array::Float64Array,
    b: &'a arrow::array::BooleanArray,
    raw: &'a arrow::array::BinaryArray,
}

impl<'a> ValueReader<'a> {
    fn new(list: &'a ListArray) -> Result<Self> {
        let lists = AttrLists::new(list)?;
        let attrs = lists.attrs();
        let child = |name: &str| {
            attrs.column_by_name(name).ok_or_else(|| DataFusionError::Execution(format!("attribute items lack {name}")))
        };
        Ok(ValueReader {
            keys: child("key")?.as_string(),
            kinds: child("kind")?.as_primitive(),
            s: child("s")?.as_string(),
            i: child("i")?.as_primitive(),
            d: child("d")?.as_primitive(),
            b: child("b")?.as_boolean(),
            raw: child("raw")?.as_binary(),
            lists,
        })
    }

    /// Values of `key` in `row`, rendered with `tag_value_text`; arrays give one value per scalar element.
    fn values(&self, row: usize, key: &str, first_only: bool) -> Vec<String> {
        use prost::Message;
        let mut out = Vec::new();
        for j in self.lists.ranges(row).into_iter().flatten() {
            if self.keys.value(j) != key {
                continue;
            }
            match self.kinds.value(j) {
                kind::STRING => out.push(tag_value_text("string", self.s.value(j))),
                kind::INT => out.push(tag_value_text("int", &self.i.value(j).to_string())),
                kind::DOUBLE => out.push(tag_value_text("float", &self.d.value(j).to_string())),
                kind::BOOL => out.push(tag_value_text("bool", &self.b.value(j).to_string())),
                kind::ARRAY => {
                    if let Ok(v) = opentelemetry_proto::tonic::common::v1::AnyValue::decode(self.raw.value(j)) {
                        render_any(&v, &mut out);
                    }
                }
                _ => {}
            }
            if first_only {
                break;
            }
        }
        out
    }
}

fn list_of<'a>(arr: &'a ArrayRef, name: &str) -> Result<&'a ListArray> {
    arr.as_any()
        .downcast_ref::<ListArray>()
        .ok_or_else(|| DataFusionError::Execution(format!("{name}: argument is not a list")))
}

impl ScalarUDFImpl for AttrValues {
    fn name(&self) -> &str {
        "attr_values"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::new_list(DataType::Utf8, true))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [list, key] = args.args.as_slice() else {
            return Err(DataFusionError::Execution("attr_values takes two arguments".into()));
        };
        let Some(key) = scalar_str(key)? else {
            return Err(DataFusionError::Execution("attr_values: key must be a string".into()));
        };
        let arr = list_arg(list, args.number_rows)?;
        let reader = ValueReader::new(list_of(&arr, "attr_values")?)?;
        let rows = (0..arr.len()).map(|row| reader.values(row, &key, false)).collect();
        Ok(ColumnarValue::Array(utf8_list(rows)))
    }
}

/// `attr(list, key)`: the first value of `key` in each row as text (NULL when absent), for SQL users.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Attr {
    signature: Signature,
}

pub fn attr_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Attr { signature: Signature::any(2, Volatility::Immutable) })
}

impl ScalarUDFImpl for Attr {
    fn name(&self) -> &str {
        "attr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [list, key] = args.args.as_slice() else {
            return Err(DataFusionError::Execution("attr takes two arguments: attr(span_attrs, 'key')".into()));
        };
        let Some(key) = scalar_str(key)? else {
            return Err(DataFusionError::Execution("attr: the key must be a string constant".into()));
        };
        let arr = list_arg(list, args.number_rows)?;
        let reader = ValueReader::new(list_of(&arr, "attr")?)?;
        let mut out = arrow::array::StringBuilder::new();
        for row in 0..arr.len() {
            let v = reader.values(row, &key, true);
            out.append_option(v.first().and_then(|t| t.split_once('\u{1f}')).map(|(_, v)| v));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `merge_slots(list, 'key', slot, 'key', slot, ...)`: the attribute list with the dedicated slot values put back
/// in front (where the block reader puts them), so SQL sees every attribute in one list whatever the block's slots.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MergeSlots {
    signature: Signature,
}

pub fn merge_slots(list: Expr, slots: Vec<(String, Expr)>) -> Expr {
    let mut args = vec![list];
    for (k, e) in slots {
        args.push(Expr::Literal(ScalarValue::Utf8(Some(k)), None));
        args.push(e);
    }
    ScalarUDF::new_from_impl(MergeSlots { signature: Signature::variadic_any(Volatility::Immutable) }).call(args)
}

impl ScalarUDFImpl for MergeSlots {
    fn name(&self) -> &str {
        "merge_slots"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.first().cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let Some((list, pairs)) = args.args.split_first() else {
            return Err(DataFusionError::Execution("merge_slots needs a list".into()));
        };
        let list = list.to_array(rows)?;
        let reader = crate::block::attrs::AttrListReader::new(list.as_ref())
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
        let mut slots: Vec<(String, ArrayRef)> = Vec::new();
        for pair in pairs.chunks(2) {
            let [k, v] = pair else { return Err(DataFusionError::Execution("merge_slots: key without column".into())) };
            let Some(k) = scalar_str(k)? else { continue };
            slots.push((k, v.to_array(rows)?));
        }
        let mut b = crate::block::attrs::AttrListBuilder::new();
        for row in 0..rows {
            for (k, col) in &slots {
                if col.is_null(row) {
                    continue;
                }
                let value = match col.data_type() {
                    DataType::Utf8 => Value::StringValue(col.as_string::<i32>().value(row).to_string()),
                    DataType::Int64 => Value::IntValue(col.as_primitive::<arrow::datatypes::Int64Type>().value(row)),
                    _ => continue,
                };
                b.push(k, Some(&AnyValue { value: Some(value) }));
            }
            for kv in reader.read(row).map_err(|e| DataFusionError::Execution(e.to_string()))? {
                b.push(&kv.key, kv.value.as_ref());
            }
            b.end_row();
        }
        Ok(ColumnarValue::Array(b.finish()))
    }
}
