//! Typed attribute lists: OTLP `KeyValue`s to and from the `List<Struct<key, kind, s, i, d, b, raw>>` columns.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Float64Array, Float64Builder, Int8Array,
    Int8Builder, Int64Array, Int64Builder, ListArray, StringArray, StringBuilder, StructArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use prost::Message;

use super::BlockError;
use super::schema::{attr_fields, kind};
use crate::model::kv;

/// Accumulates attribute lists row by row; `finish` yields the list column.
#[derive(Default)]
pub struct AttrListBuilder {
    offsets: Vec<i32>,
    len: i32,
    key: StringBuilder,
    kind: Int8Builder,
    s: StringBuilder,
    i: Int64Builder,
    d: Float64Builder,
    b: BooleanBuilder,
    raw: BinaryBuilder,
}

impl AttrListBuilder {
    pub fn new() -> Self {
        AttrListBuilder { offsets: vec![0], ..Default::default() }
    }

    /// Appends one attribute to the current row.
    pub fn push(&mut self, key: &str, value: Option<&AnyValue>) {
        self.key.append_value(key);
        self.len += 1;
        let (mut s, mut i, mut d, mut b, mut raw): (Option<&str>, _, _, _, Option<Vec<u8>>) =
            (None, None, None, None, None);
        let k = match value.and_then(|v| v.value.as_ref()) {
            None => kind::EMPTY,
            Some(Value::StringValue(v)) => {
                s = Some(v);
                kind::STRING
            }
            Some(Value::IntValue(v)) => {
                i = Some(*v);
                kind::INT
            }
            Some(Value::DoubleValue(v)) => {
                d = Some(*v);
                kind::DOUBLE
            }
            Some(Value::BoolValue(v)) => {
                b = Some(*v);
                kind::BOOL
            }
            Some(Value::BytesValue(v)) => {
                raw = Some(v.clone());
                kind::BYTES
            }
            Some(v @ Value::ArrayValue(_)) => {
                raw = Some(AnyValue { value: Some(v.clone()) }.encode_to_vec());
                kind::ARRAY
            }
            Some(v @ Value::KvlistValue(_)) => {
                raw = Some(AnyValue { value: Some(v.clone()) }.encode_to_vec());
                kind::KVLIST
            }
            Some(v) => {
                raw = Some(AnyValue { value: Some(v.clone()) }.encode_to_vec());
                kind::OTHER
            }
        };
        self.kind.append_value(k);
        self.s.append_option(s);
        self.i.append_option(i);
        self.d.append_option(d);
        self.b.append_option(b);
        self.raw.append_option(raw);
    }

    /// Ends the current row's list.
    pub fn end_row(&mut self) {
        self.offsets.push(self.len);
    }

    pub fn finish(&mut self) -> ArrayRef {
        let fields = attr_fields();
        let values = StructArray::new(
            fields.clone(),
            vec![
                Arc::new(self.key.finish()) as ArrayRef,
                Arc::new(self.kind.finish()),
                Arc::new(self.s.finish()),
                Arc::new(self.i.finish()),
                Arc::new(self.d.finish()),
                Arc::new(self.b.finish()),
                Arc::new(self.raw.finish()),
            ],
            None,
        );
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        self.len = 0;
        let field = Arc::new(Field::new("item", DataType::Struct(fields), false));
        Arc::new(ListArray::new(field, OffsetBuffer::new(offsets.into()), Arc::new(values), None))
    }
}

/// Reads attribute lists back out of a list column: whole (as OTLP key-values) or one key in place. Holds the
/// column's arrays (reference-counted), so it can live as long as the batch it came from.
pub struct AttrListReader {
    list: ListArray,
    key: StringArray,
    kind: Int8Array,
    s: StringArray,
    i: Int64Array,
    d: Float64Array,
    b: BooleanArray,
    raw: BinaryArray,
}

fn child<T: Clone + 'static>(st: &StructArray, name: &str) -> Result<T, BlockError> {
    st.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .cloned()
        .ok_or_else(|| BlockError::Layout(format!("attribute field {name} missing or mistyped")))
}

/// One stored attribute value, read in place.
#[derive(Debug, Clone, Copy)]
pub enum AttrRef<'a> {
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// An attribute without a value.
    Empty,
    /// Bytes, arrays, key-value lists and other forms: `(kind, bytes)` as in the list's `raw` field (arrays and
    /// lists are their protobuf `AnyValue` encoding).
    Raw(i8, &'a [u8]),
}

impl AttrListReader {
    pub fn new(col: &dyn Array) -> Result<Self, BlockError> {
        let list = col
            .as_any()
            .downcast_ref::<ListArray>()
            .cloned()
            .ok_or_else(|| BlockError::Layout("attribute column is not a list".into()))?;
        let st = list
            .values()
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| BlockError::Layout("attribute list items are not structs".into()))?;
        Ok(AttrListReader {
            key: child(st, "key")?,
            kind: child(st, "kind")?,
            s: child(st, "s")?,
            i: child(st, "i")?,
            d: child(st, "d")?,
            b: child(st, "b")?,
            raw: child(st, "raw")?,
            list,
        })
    }

    fn range(&self, row: usize) -> std::ops::Range<usize> {
        let o = self.list.value_offsets();
        o[row] as usize..o[row + 1] as usize
    }

    /// Appends the attributes of `row` to `out`.
    pub fn read_into(&self, row: usize, out: &mut Vec<KeyValue>) -> Result<(), BlockError> {
        let range = self.range(row);
        out.reserve(range.len());
        for j in range {
            out.push(kv(self.key.value(j), self.value(j)?));
        }
        Ok(())
    }

    pub fn read(&self, row: usize) -> Result<Vec<KeyValue>, BlockError> {
        let mut v = Vec::new();
        self.read_into(row, &mut v)?;
        Ok(v)
    }

    /// The first value of `key` in `row`'s list, in place.
    pub fn find(&self, row: usize, key: &str) -> Option<AttrRef<'_>> {
        self.range(row).find(|&j| self.key.value(j) == key).map(|j| self.value_ref(j))
    }

    /// The keys of `row`'s list, as stored (with repeats).
    pub fn keys(&self, row: usize) -> impl Iterator<Item = &str> {
        self.range(row).map(|j| self.key.value(j))
    }

    fn value_ref(&self, j: usize) -> AttrRef<'_> {
        match self.kind.value(j) {
            kind::EMPTY => AttrRef::Empty,
            kind::STRING => AttrRef::Str(self.s.value(j)),
            kind::INT => AttrRef::Int(self.i.value(j)),
            kind::DOUBLE => AttrRef::Float(self.d.value(j)),
            kind::BOOL => AttrRef::Bool(self.b.value(j)),
            k => AttrRef::Raw(k, if self.raw.is_null(j) { &[] } else { self.raw.value(j) }),
        }
    }

    fn value(&self, j: usize) -> Result<Option<AnyValue>, BlockError> {
        let v = match self.kind.value(j) {
            kind::EMPTY => return Ok(None),
            kind::STRING => Value::StringValue(self.s.value(j).to_string()),
            kind::INT => Value::IntValue(self.i.value(j)),
            kind::DOUBLE => Value::DoubleValue(self.d.value(j)),
            kind::BOOL => Value::BoolValue(self.b.value(j)),
            kind::BYTES => Value::BytesValue(self.raw.value(j).to_vec()),
            kind::ARRAY | kind::KVLIST | kind::OTHER => {
                return AnyValue::decode(self.raw.value(j))
                    .map(Some)
                    .map_err(|e| BlockError::Layout(format!("bad nested attribute value: {e}")));
            }
            other => return Err(BlockError::Layout(format!("unknown attribute kind {other}"))),
        };
        Ok(Some(AnyValue { value: Some(v) }))
    }
}

/// Shorthand for building a string `AnyValue`, used when dedicated columns are turned back into attributes.
pub fn string_value(s: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(Value::StringValue(s.to_string())) })
}

pub fn int_value(i: i64) -> Option<AnyValue> {
    Some(AnyValue { value: Some(Value::IntValue(i)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn kv(key: &str, v: Value) -> KeyValue {
        crate::model::kv(key, Some(AnyValue { value: Some(v) }))
    }

    #[test]
    fn every_value_type_round_trips() {
        let row0 = vec![
            kv("s", Value::StringValue("x".into())),
            kv("i", Value::IntValue(-7)),
            kv("d", Value::DoubleValue(1.5)),
            kv("b", Value::BoolValue(true)),
            kv("y", Value::BytesValue(vec![0, 1, 2])),
            kv(
                "a",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue { value: Some(Value::IntValue(1)) }, AnyValue { value: None }],
                }),
            ),
            kv("m", Value::KvlistValue(KeyValueList { values: vec![kv("inner", Value::BoolValue(false))] })),
            crate::model::kv("empty", None),
        ];
        let mut b = AttrListBuilder::new();
        for a in &row0 {
            b.push(&a.key, a.value.as_ref());
        }
        b.end_row();
        b.end_row(); // an empty row
        let arr = b.finish();
        let r = AttrListReader::new(arr.as_ref()).unwrap();
        assert_eq!(r.read(0).unwrap(), row0);
        assert!(r.read(1).unwrap().is_empty());
    }
}
