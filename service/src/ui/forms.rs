//! Job forms generated from a job type's parameter schema (the JSON Schema
//! of its parameter struct, [`crate::jobs::JobType::params_schema`]): one
//! field per parameter, its kind from the schema, and the submitted form
//! turned back into the parameters the API takes. A new job type gets its
//! form without touching the UI.

use maud::{Markup, html};
use serde_json::{Map, Value};

/// How a parameter is entered.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    Text,
    /// A document (rule file, pipeline config): a text area, kept verbatim.
    Document,
    Integer,
    Number,
    Boolean,
    /// One of these values.
    Choice(Vec<String>),
    /// Lists and maps, written as JSON.
    Json,
    /// The id of one of the user's datasets (schema extension
    /// `x-kiln: dataset`): picked from a list.
    Dataset,
    /// The id of one of the user's finished jobs of a type (`x-kiln:
    /// job:TYPE`): picked from a list.
    Job(String),
}

/// What the pickers offer: the user's datasets and finished jobs.
#[derive(Debug, Clone, Default)]
pub struct Choices {
    /// (id, name).
    pub datasets: Vec<(String, String)>,
    /// (id, type, when it finished).
    pub jobs: Vec<(String, String, String)>,
}

/// One parameter of a job form.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub kind: FieldKind,
    pub required: bool,
    pub description: String,
    pub default: Option<Value>,
}

/// Parameters entered as documents rather than one line.
const DOCUMENTS: [&str; 2] = ["rules", "config"];

/// `schema` with `$ref`s into its `$defs` followed, and `Option`'s
/// `anyOf [T, null]` unwrapped.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(reference) = schema.get("$ref").and_then(|r| r.as_str())
        && let Some(name) = reference.strip_prefix("#/$defs/")
        && let Some(target) = root.get("$defs").and_then(|d| d.get(name))
    {
        return resolve(root, target);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(variants) = schema.get(key).and_then(|v| v.as_array()) {
            let not_null: Vec<&Value> = variants
                .iter()
                .filter(|v| v.get("type").and_then(|t| t.as_str()) != Some("null"))
                .collect();
            if let [only] = not_null[..]
                && only.get("const").is_none()
            {
                return resolve(root, only);
            }
        }
    }
    schema
}

/// The string values of an enum schema (`enum`, or `oneOf` of `const`s).
fn choices(schema: &Value) -> Option<Vec<String>> {
    if let Some(values) = schema.get("enum").and_then(|e| e.as_array()) {
        return Some(
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        );
    }
    let variants = schema.get("oneOf")?.as_array()?;
    let values: Vec<String> = variants
        .iter()
        .filter_map(|v| v.get("const").and_then(|c| c.as_str()).map(str::to_string))
        .collect();
    (values.len() == variants.len()).then_some(values)
}

/// The first non-null `type` of a schema.
fn type_of(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(types) => types
            .iter()
            .filter_map(|t| t.as_str())
            .find(|t| *t != "null"),
        _ => None,
    }
}

/// The fields of a parameter schema: the required ones first, each group
/// in the schema's order.
pub fn fields(schema: &Value) -> Vec<Field> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) else {
        return Vec::new();
    };
    let mut fields: Vec<Field> = properties
        .iter()
        .map(|(name, property)| {
            let resolved = resolve(schema, property);
            let picker = property.get("x-kiln").and_then(|k| k.as_str());
            let kind = match (picker, choices(resolved), type_of(resolved)) {
                (Some("dataset"), ..) => FieldKind::Dataset,
                (Some(p), ..) if p.starts_with("job:") => FieldKind::Job(p[4..].to_string()),
                (_, choice, kind) => match (choice, kind) {
                    (Some(values), _) => FieldKind::Choice(values),
                    (None, Some("string")) if DOCUMENTS.contains(&name.as_str()) => {
                        FieldKind::Document
                    }
                    (None, Some("string")) => FieldKind::Text,
                    (None, Some("integer")) => FieldKind::Integer,
                    (None, Some("number")) => FieldKind::Number,
                    (None, Some("boolean")) => FieldKind::Boolean,
                    _ => FieldKind::Json,
                },
            };
            let description = property
                .get("description")
                .or_else(|| resolved.get("description"))
                .and_then(|d| d.as_str())
                .unwrap_or_default()
                .to_string();
            Field {
                name: name.clone(),
                kind,
                required: required.contains(&name.as_str()),
                description,
                default: property.get("default").cloned(),
            }
        })
        .collect();
    fields.sort_by_key(|f| !f.required);
    fields
}

/// A field the form cannot turn into a parameter, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The parameters a submitted form stands for. Empty optional fields are
/// left out (the parameter's default applies).
pub fn params(fields: &[Field], form: &[(String, String)]) -> Result<Value, FieldError> {
    let mut params = Map::new();
    for field in fields {
        let raw = form
            .iter()
            .find(|(k, _)| *k == field.name)
            .map_or("", |(_, v)| v.as_str());
        let text = match field.kind {
            FieldKind::Document => raw,
            _ => raw.trim(),
        };
        if text.trim().is_empty() {
            if field.required {
                return Err(FieldError {
                    field: field.name.clone(),
                    message: format!("{} is required", field.name),
                });
            }
            continue;
        }
        let bad = |what: &str| FieldError {
            field: field.name.clone(),
            message: format!("{} must be {what}, not '{text}'", field.name),
        };
        let value = match &field.kind {
            FieldKind::Text | FieldKind::Document | FieldKind::Dataset | FieldKind::Job(_) => {
                Value::String(text.to_string())
            }
            FieldKind::Integer => text
                .parse::<i64>()
                .map(Value::from)
                .map_err(|_| bad("a whole number"))?,
            FieldKind::Number => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad("a number"))?,
            FieldKind::Boolean => match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(bad("true or false")),
            },
            FieldKind::Choice(values) => {
                if !values.iter().any(|v| v == text) {
                    return Err(bad(&format!("one of {}", values.join(", "))));
                }
                Value::String(text.to_string())
            }
            FieldKind::Json => serde_json::from_str(text).map_err(|e| FieldError {
                field: field.name.clone(),
                message: format!("{} is not valid JSON: {e}", field.name),
            })?,
        };
        params.insert(field.name.clone(), value);
    }
    Ok(Value::Object(params))
}

/// The inputs of `fields`, filled with `values` (a re-shown form) or
/// their defaults; pickers offer `choices`.
pub fn inputs(fields: &[Field], values: &[(String, String)], choices: &Choices) -> Markup {
    let value_of = |field: &Field| -> String {
        match values.iter().find(|(k, _)| *k == field.name) {
            Some((_, v)) => v.clone(),
            None => match &field.default {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            },
        }
    };
    html! {
        @for field in fields {
            @let value = value_of(field);
            @let id = format!("field-{}", field.name);
            div.field {
                label for=(id) {
                    b { (field.name) }
                    @if field.required { " (required)" }
                    @match &field.kind {
                        FieldKind::Json => { span.muted { " JSON" } },
                        _ => {},
                    }
                }
                @if !field.description.is_empty() { div.muted { (field.description) } }
                @match &field.kind {
                    FieldKind::Document => {
                        textarea id=(id) name=(field.name) rows="12" cols="90" required[field.required] { (value) }
                    },
                    FieldKind::Json => {
                        textarea id=(id) name=(field.name) rows="3" cols="90" { (value) }
                    },
                    FieldKind::Integer => {
                        input id=(id) name=(field.name) type="number" step="1" value=(value) required[field.required];
                    },
                    FieldKind::Number => {
                        input id=(id) name=(field.name) type="number" step="any" value=(value) required[field.required];
                    },
                    FieldKind::Boolean => {
                        select id=(id) name=(field.name) {
                            option value="" { "default" }
                            option value="true" selected[value == "true"] { "true" }
                            option value="false" selected[value == "false"] { "false" }
                        }
                    },
                    FieldKind::Choice(options) => {
                        select id=(id) name=(field.name) required[field.required] {
                            @if !field.required { option value="" { "default" } }
                            @for o in options { option value=(o) selected[*o == value] { (o) } }
                        }
                    },
                    FieldKind::Text => {
                        input id=(id) name=(field.name) type="text" size="60" value=(value) required[field.required];
                    },
                    FieldKind::Dataset => {
                        select id=(id) name=(field.name) required[field.required] {
                            @if !field.required { option value="" { "none" } }
                            @for (dataset, name) in &choices.datasets {
                                option value=(dataset) selected[*dataset == value] { (name) " (" (dataset) ")" }
                            }
                        }
                    },
                    FieldKind::Job(job_type) => {
                        select id=(id) name=(field.name) required[field.required] {
                            @if !field.required { option value="" { "none" } }
                            @for (job, t, finished) in choices.jobs.iter().filter(|(_, t, _)| t == job_type) {
                                option value=(job) selected[*job == value] { (t) " " (job) ", " (finished) }
                            }
                        }
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobType;

    fn field<'a>(fields: &'a [Field], name: &str) -> &'a Field {
        fields
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no field {name} in {fields:?}"))
    }

    #[test]
    fn every_job_type_gets_a_form_from_its_schema() {
        for t in JobType::ALL {
            assert!(!fields(&t.params_schema()).is_empty(), "{}", t.as_str());
        }
        let generate = fields(&JobType::Generate.params_schema());
        assert_eq!(field(&generate, "rules").kind, FieldKind::Document);
        assert!(field(&generate, "rules").required);
        assert_eq!(field(&generate, "rows").kind, FieldKind::Integer);
        assert!(!field(&generate, "seed").required);
        assert_eq!(
            field(&generate, "format").kind,
            FieldKind::Choice(vec!["parquet".into(), "csv".into()])
        );
        assert_eq!(field(&generate, "name").kind, FieldKind::Text);
        let fuse = fields(&JobType::Fuse.params_schema());
        assert_eq!(field(&fuse, "inputs").kind, FieldKind::Json);
        assert_eq!(
            field(&fuse, "strategy").kind,
            FieldKind::Choice(vec!["union".into(), "join".into(), "asof".into()])
        );
        assert_eq!(field(&fuse, "tolerance_seconds").kind, FieldKind::Number);
        let evaluate = fields(&JobType::Evaluate.params_schema());
        assert_eq!(field(&evaluate, "types").kind, FieldKind::Json);
        assert_eq!(field(&evaluate, "real").kind, FieldKind::Dataset);
        assert_eq!(field(&evaluate, "holdout").kind, FieldKind::Dataset);
        assert!(!field(&evaluate, "holdout").required);
        let sample = fields(&JobType::ReproduceGenerate.params_schema());
        assert_eq!(
            field(&sample, "model_job").kind,
            FieldKind::Job("reproduce-train".into())
        );
        // A picker lists the user's datasets by name.
        let choices = Choices {
            datasets: vec![("d1".into(), "readings".into())],
            jobs: vec![],
        };
        let html = inputs(&evaluate, &[], &choices).into_string();
        assert!(
            html.contains("<option value=\"d1\">readings (d1)</option>"),
            "{html}"
        );
    }

    #[test]
    fn a_submitted_form_becomes_typed_params_or_names_the_bad_field() {
        let generate = fields(&JobType::Generate.params_schema());
        let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let params = params(
            &generate,
            &form(&[
                ("rules", "columns: []\n"),
                ("rows", " 100 "),
                ("seed", ""),
                ("format", "csv"),
            ]),
        );
        assert_eq!(
            params,
            Ok(serde_json::json!({"rules": "columns: []\n", "rows": 100, "format": "csv"}))
        );
        let bad = super::params(&generate, &form(&[("rules", "x"), ("rows", "many")]));
        assert_eq!(bad.map_err(|e| e.field), Err("rows".to_string()));
        let missing = super::params(&generate, &form(&[("rows", "1")]));
        assert_eq!(
            missing.map_err(|e| e.message),
            Err("rules is required".to_string())
        );
        let fuse = fields(&JobType::Fuse.params_schema());
        let bad_json = super::params(&fuse, &form(&[("inputs", "[{"), ("strategy", "union")]));
        assert_eq!(bad_json.map_err(|e| e.field), Err("inputs".to_string()));
    }
}
