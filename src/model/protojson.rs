//! proto3 JSON conventions shared by every JSON surface (OTLP/HTTP responses, Tempo's trace JSON).

use serde_json::Value;

/// proto3 JSON omits fields holding their default value. Attribute values (`stringValue`, `intValue`, ...) are
/// kept even when zero, since there the field's presence is the value's type.
pub fn strip_defaults(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, x| {
                k.ends_with("Value")
                    || !(x.is_null()
                        || x.as_str() == Some("")
                        || x.as_array().is_some_and(Vec::is_empty)
                        || x.as_u64() == Some(0)
                        || x.as_str() == Some("0") && k.ends_with("Nano"))
            });
            m.iter_mut().filter(|(k, _)| !k.ends_with("Value")).for_each(|(_, x)| strip_defaults(x));
        }
        Value::Array(a) => a.iter_mut().for_each(strip_defaults),
        _ => {}
    }
}
