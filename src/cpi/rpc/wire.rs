//! Request and response documents as the director and the bosh CLI exchange them
//! (docs-bosh `cpi-api-rpc.md`; the director's `external_cpi.rb` RESPONSE_SCHEMA).
use serde::Serialize;
use serde_json::Value;

/// The largest request read from stdin. Real requests are a few KiB (the biggest, create_vm, carries the
/// agent env and networks); anything over this is refused before it is parsed.
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The most JSON values (numbers, strings, keys, arrays, objects…) a request may hold. Parsed, each costs
/// 32 bytes and more, so a 16 MiB request of `[0,0,…]` (8 million values) would take hundreds of MiB; real
/// requests hold a few hundred. Counted in one pass over the bytes, before anything is parsed.
pub const MAX_REQUEST_VALUES: usize = 100_000;

/// The raw request, before the method and its arguments are typed.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub arguments: Vec<Value>,
    pub context: Value,
    /// 1 when absent (the director omits it on its `info` probe).
    pub api_version: u32,
}

/// Why the request document itself is unusable.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("request is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("request must be a JSON object, got {0}")]
    NotObject(&'static str),
    #[error("request field `{field}` {problem}")]
    Field { field: &'static str, problem: String },
    #[error("request is larger than {} MiB, the CPI's cap (real requests are a few KiB)", MAX_REQUEST_BYTES >> 20)]
    TooLarge,
    #[error(
        "request holds more than {MAX_REQUEST_VALUES} JSON values, the CPI's cap (real requests hold a few hundred)"
    )]
    TooManyValues,
}

/// An upper bound of the number of JSON values in `input` (one more than its commas and colons outside
/// strings, plus one per array or object): counted without parsing, stopping as soon as it passes `limit`.
/// Invalid JSON gets some count; the parser reports what is wrong with it.
fn values_over(input: &[u8], limit: usize) -> bool {
    let (mut count, mut in_string, mut escaped) = (1usize, false, false);
    for &b in input {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b':' | b'[' | b'{' => {
                count += 1;
                if count > limit {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Request {
    pub fn parse(input: &[u8]) -> Result<Request, WireError> {
        if input.len() > MAX_REQUEST_BYTES {
            return Err(WireError::TooLarge);
        }
        if values_over(input, MAX_REQUEST_VALUES) {
            return Err(WireError::TooManyValues);
        }
        let v: Value = serde_json::from_slice(input).map_err(WireError::Json)?;
        let Value::Object(mut m) = v else { return Err(WireError::NotObject(type_name(&v))) };
        let method = match m.remove("method") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(other) => {
                return Err(WireError::Field {
                    field: "method",
                    problem: format!("must be a non-empty string, got {}", type_name(&other)),
                })
            }
            None => return Err(WireError::Field { field: "method", problem: "is missing".into() }),
        };
        let arguments = match m.remove("arguments") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => Vec::new(),
            Some(other) => {
                return Err(WireError::Field {
                    field: "arguments",
                    problem: format!("must be an array, got {}", type_name(&other)),
                })
            }
        };
        let context = match m.remove("context") {
            Some(c @ Value::Object(_)) => c,
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(other) => {
                return Err(WireError::Field {
                    field: "context",
                    problem: format!("must be an object, got {}", type_name(&other)),
                })
            }
        };
        let api_version = match m.remove("api_version") {
            None | Some(Value::Null) => 1,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (1..=1000).contains(&v) => v as u32,
                _ => {
                    return Err(WireError::Field {
                        field: "api_version",
                        problem: format!("must be a positive integer, got {n}"),
                    })
                }
            },
            Some(other) => {
                return Err(WireError::Field {
                    field: "api_version",
                    problem: format!("must be an integer, got {}", type_name(&other)),
                })
            }
        };
        Ok(Request { method, arguments, context, api_version })
    }
}

/// `{"type": "Bosh::Clouds::…", "message": …, "ok_to_retry": …}`
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResponseError {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub ok_to_retry: bool,
}

/// Always all three keys; `log` is a string, never null.
#[derive(Debug, Clone, Serialize)]
pub struct Response {
    pub result: Value,
    pub error: Option<ResponseError>,
    pub log: String,
}

impl Response {
    pub fn ok(result: Value) -> Self {
        Response { result, error: None, log: String::new() }
    }
    pub fn err(kind: &str, message: impl Into<String>, ok_to_retry: bool) -> Self {
        Response {
            result: Value::Null,
            error: Some(ResponseError { kind: kind.to_string(), message: message.into(), ok_to_retry }),
            log: String::new(),
        }
    }
    /// The one JSON line written to stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"result":null,"error":{"type":"Bosh::Clouds::CloudError","message":"cannot serialize response","ok_to_retry":false},"log":""}"#.to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_defaults() {
        let r = Request::parse(br#"{"method":"info"}"#).unwrap();
        assert_eq!(r.api_version, 1);
        assert!(r.arguments.is_empty());
        let r = Request::parse(br#"{"method":"info","arguments":[],"context":{"director_uuid":"x"},"api_version":2}"#)
            .unwrap();
        assert_eq!(r.api_version, 2);
    }

    #[test]
    fn wrong_shapes_are_named() {
        for (input, needle) in [
            (&b"[]"[..], "an array"),
            (b"{\"method\":3}", "method"),
            (b"{\"method\":\"info\",\"arguments\":{}}", "arguments"),
            (b"{\"method\":\"info\",\"api_version\":\"2\"}", "api_version"),
            (b"{\"method\":\"info\",\"api_version\":-1}", "api_version"),
            (b"\xff\xfe", "not valid JSON"),
        ] {
            let e = Request::parse(input).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
    }

    #[test]
    fn values_are_counted_outside_strings_only() {
        // the object, "a", the array, 1, 2, 3, "b", the inner object, "c" and null
        assert!(!values_over(br#"{"a":[1,2,3],"b":{"c":null}}"#, 10));
        assert!(values_over(br#"{"a":[1,2,3],"b":{"c":null}}"#, 9));
        // commas, colons and brackets inside strings (escaped quotes too) are text
        assert!(!values_over(br#"["a,b:c[{", "\",[", "x\\"]"#, 4));
        let zeros = format!("[{}0]", "0,".repeat(MAX_REQUEST_VALUES));
        let e = Request::parse(zeros.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("JSON values"), "{e}");
        let e = Request::parse(&vec![b' '; MAX_REQUEST_BYTES + 1]).unwrap_err().to_string();
        assert!(e.contains("16 MiB"), "{e}");
    }

    #[test]
    fn response_always_has_three_keys() {
        let v: Value = serde_json::from_str(&Response::ok(Value::Null).to_json()).unwrap();
        assert!(v.get("result").is_some() && v["error"].is_null() && v["log"] == "");
    }
}
