//! Searching the hub's models (`/api/models?search=...`): ids, downloads, likes,
//! licence and whether a model is gated. The answer is not trusted: its size is
//! bounded before it is parsed, it may hold no more results than were asked for,
//! every id must be a repository id and every string a short line without control
//! characters; anything else is refused with one line saying what.

use crate::{is_repo_id, read_body, Error, Hub, Result};
use serde::Serialize;
use serde_json::Value;

/// Most results one search asks for (the hub's own page is 1000; a person reads
/// far fewer).
pub const MAX_LIMIT: usize = 100;
/// Most bytes of a search answer read (100 results with their tags are ~200 KB).
pub const MAX_BODY: u64 = 4 << 20;
/// Most characters of a query.
pub const MAX_QUERY: usize = 200;
/// Most tags of one result kept, and most bytes of any string from the hub.
const MAX_TAGS: usize = 512;
const MAX_STRING: usize = 256;

/// Which weight format the results must hold (the hub's `filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// No filter.
    #[default]
    Any,
    /// Repositories with `.gguf` files.
    Gguf,
    /// Repositories with `.safetensors` files.
    Safetensors,
}

impl Format {
    /// `any`, `gguf` or `safetensors`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "" | "any" => Ok(Self::Any),
            "gguf" => Ok(Self::Gguf),
            "safetensors" => Ok(Self::Safetensors),
            s => Err(Error::Invalid(format!(
                "format `{}`: expected any, gguf or safetensors",
                s.escape_debug()
            ))),
        }
    }
}

/// The order of the results (the hub's `sort`, highest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// Downloads in the last 30 days.
    #[default]
    Downloads,
    /// The hub's trending score (recent likes and downloads).
    Trending,
    /// Likes.
    Likes,
}

impl Sort {
    /// `downloads`, `trending` or `likes`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "" | "downloads" => Ok(Self::Downloads),
            "trending" | "trendingScore" => Ok(Self::Trending),
            "likes" => Ok(Self::Likes),
            s => Err(Error::Invalid(format!(
                "sort `{}`: expected downloads, trending or likes",
                s.escape_debug()
            ))),
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Downloads => "downloads",
            Self::Trending => "trendingScore",
            Self::Likes => "likes",
        }
    }
}

/// Whether a model asks users to accept its licence before downloading: not, by a
/// click (`auto`), or after its authors approve (`manual`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Gated {
    /// Anyone may download it.
    #[default]
    No,
    /// Access is granted on accepting the licence.
    Auto,
    /// Access is granted by the authors.
    Manual,
}

/// One model the search found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    /// `org/name`.
    pub id: String,
    /// Downloads in the last 30 days.
    pub downloads: u64,
    /// Likes.
    pub likes: u64,
    /// The licence its tags name (`license:...`).
    pub license: Option<String>,
    /// Whether it is gated.
    pub gated: Gated,
    /// The task (`text-generation`, ...).
    pub pipeline: Option<String>,
    /// The library it is for (`transformers`, `gguf`, ...).
    pub library: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
}

impl Hub {
    /// Searches the hub's models for `query` (empty: all), holding `format`, by
    /// `sort`, at most `limit` (1 to [`MAX_LIMIT`]).
    pub fn search(
        &self,
        query: &str,
        format: Format,
        sort: Sort,
        limit: usize,
    ) -> Result<Vec<SearchResult>> {
        let query = query.trim();
        if query.chars().count() > MAX_QUERY || query.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "search: a query is one line of at most {MAX_QUERY} characters"
            )));
        }
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::Invalid(format!(
                "search: a limit of {limit} results (1 to {MAX_LIMIT})"
            )));
        }
        let mut req = self
            .get(&format!("{}/api/models", self.endpoint))
            .query("search", query)
            .query("sort", sort.key())
            .query("direction", "-1")
            .query("limit", &limit.to_string());
        req = match format {
            Format::Any => req,
            Format::Gguf => req.query("filter", "gguf"),
            Format::Safetensors => req.query("filter", "safetensors"),
        };
        // The fields shown, and no others (the default set lacks `gated`).
        for field in [
            "downloads",
            "likes",
            "gated",
            "tags",
            "pipeline_tag",
            "library_name",
        ] {
            req = req.query("expand[]", field);
        }
        let what = format!("search `{}`", query.escape_debug());
        let resp = req.call().map_err(|e| match e {
            ureq::Error::Status(code, _) => {
                Error::Invalid(format!("{what}: {} answered HTTP {code}", self.endpoint))
            }
            ureq::Error::Transport(t) => Error::Invalid(format!("{what}: {t}")),
        })?;
        let body = read_body(resp, MAX_BODY, &what)?;
        parse_search(&body, limit).map_err(|e| Error::Invalid(format!("{what}: {e}")))
    }
}

/// A search answer, checked: a JSON array of at most `limit` models.
pub fn parse_search(body: &[u8], limit: usize) -> std::result::Result<Vec<SearchResult>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let list = v.as_array().ok_or("the answer is not a list of models")?;
    if list.len() > limit {
        return Err(format!(
            "the hub sent {} results, more than the {limit} asked for",
            list.len()
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let bad = |m: String| format!("result {}: {m}", i + 1);
        let id = m["id"]
            .as_str()
            .or_else(|| m["modelId"].as_str())
            .ok_or_else(|| bad("no model id".into()))?;
        if !is_repo_id(id) {
            // Models from before namespaces (`gpt2`) have ids without an owner; we
            // pull only `org/name`, so they are left out, not refused.
            if !id.contains('/') && is_repo_id(&format!("x/{id}")) {
                continue;
            }
            return Err(bad(format!(
                "`{}` is not a repository id",
                truncated(id).escape_debug()
            )));
        }
        let count = |key: &str| match &m[key] {
            Value::Null => Ok(0),
            v => v.as_u64().ok_or_else(|| {
                bad(format!(
                    "{id}: `{key}` is not a count: {}",
                    truncated(&v.to_string())
                ))
            }),
        };
        let (gated, license) = gated_and_license(m).map_err(|e| bad(format!("{id}: {e}")))?;
        let text = |key: &str| -> std::result::Result<Option<String>, String> {
            match &m[key] {
                Value::Null => Ok(None),
                Value::String(s) => check_string(s)
                    .map(|s| Some(s.to_string()))
                    .map_err(|e| bad(format!("{id}: `{key}` {e}"))),
                v => Err(bad(format!(
                    "{id}: `{key}` is not a string: {}",
                    truncated(&v.to_string())
                ))),
            }
        };
        out.push(SearchResult {
            id: id.to_string(),
            downloads: count("downloads")?,
            likes: count("likes")?,
            license,
            gated,
            pipeline: text("pipeline_tag")?,
            library: text("library_name")?,
            tags: tags(m).map_err(|e| bad(format!("{id}: {e}")))?,
        });
    }
    Ok(out)
}

/// The `gated` field and the licence tag of a model's description (a search result
/// or a file listing), checked.
pub(crate) fn gated_and_license(m: &Value) -> std::result::Result<(Gated, Option<String>), String> {
    let gated = match &m["gated"] {
        Value::Null | Value::Bool(false) => Gated::No,
        // Older answers say `true` for what is now `auto`.
        Value::Bool(true) => Gated::Auto,
        Value::String(s) if s == "auto" => Gated::Auto,
        Value::String(s) if s == "manual" => Gated::Manual,
        v => {
            return Err(format!(
                "`gated` is {}, not false, \"auto\" or \"manual\"",
                truncated(&v.to_string())
            ))
        }
    };
    let license = tags(m)?
        .into_iter()
        .find_map(|t| t.strip_prefix("license:").map(str::to_string));
    Ok((gated, license))
}

/// The `tags` of a model's description, checked (absent: none).
fn tags(m: &Value) -> std::result::Result<Vec<String>, String> {
    let list = match &m["tags"] {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        v => {
            return Err(format!(
                "`tags` is not a list: {}",
                truncated(&v.to_string())
            ))
        }
    };
    if list.len() > MAX_TAGS {
        return Err(format!("{} tags, more than {MAX_TAGS}", list.len()));
    }
    list.iter()
        .map(|t| {
            let s = t
                .as_str()
                .ok_or_else(|| format!("a tag is not a string: {}", truncated(&t.to_string())))?;
            check_string(s)
                .map(str::to_string)
                .map_err(|e| format!("a tag {e}"))
        })
        .collect()
}

/// A string from the hub that is shown to a person: one line, not empty, at most
/// [`MAX_STRING`] bytes, no control characters (a terminal would obey them).
fn check_string(s: &str) -> std::result::Result<&str, String> {
    if s.is_empty() || s.len() > MAX_STRING || s.chars().any(char::is_control) {
        Err(format!(
            "`{}` is not a short line of text",
            truncated(s).escape_debug()
        ))
    } else {
        Ok(s)
    }
}

/// At most 60 characters of `s`, for quoting it in an error.
fn truncated(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_parsed_and_hostile_answers_refused_with_one_line() {
        let body = br#"[
            {"id":"org/a-GGUF","downloads":120,"likes":3,"gated":false,
             "tags":["gguf","license:apache-2.0"],"pipeline_tag":"text-generation","library_name":"gguf"},
            {"id":"org/b","gated":"manual","tags":["license:gemma"]},
            {"id":"gpt2","downloads":5},
            {"id":"org/c","gated":true}
        ]"#;
        let r = parse_search(body, 10).unwrap();
        assert_eq!(r.len(), 3, "the namespace-less id is left out");
        assert_eq!(
            (r[0].id.as_str(), r[0].downloads, r[0].likes, r[0].gated),
            ("org/a-GGUF", 120, 3, Gated::No)
        );
        assert_eq!(r[0].license.as_deref(), Some("apache-2.0"));
        assert_eq!(r[0].library.as_deref(), Some("gguf"));
        assert_eq!(
            (r[1].gated, r[1].license.as_deref(), r[1].downloads),
            (Gated::Manual, Some("gemma"), 0)
        );
        assert_eq!(r[2].gated, Gated::Auto);

        let refused = |body: &str, why: &str| {
            let e = parse_search(body.as_bytes(), 2).unwrap_err();
            assert!(e.contains(why), "{e} (wanted: {why})");
            assert!(!e.contains('\n'), "one line: {e}");
        };
        refused("not json", "not JSON");
        refused(r#"{"id":"a/b"}"#, "not a list");
        refused(
            r#"[{"id":"a/b"},{"id":"a/c"},{"id":"a/d"}]"#,
            "more than the 2",
        );
        refused(r#"[{"downloads":1}]"#, "no model id");
        refused(r#"[{"id":"../../etc"}]"#, "not a repository id");
        refused(r#"[{"id":"a/b/c"}]"#, "not a repository id");
        refused(r#"[{"id":"a/b","downloads":-1}]"#, "not a count");
        refused(r#"[{"id":"a/b","likes":"many"}]"#, "not a count");
        refused(r#"[{"id":"a/b","gated":"yes"}]"#, "`gated`");
        refused(r#"[{"id":"a/b","tags":"x"}]"#, "not a list");
        refused(r#"[{"id":"a/b","tags":[1]}]"#, "not a string");
        refused(
            r#"[{"id":"a/b","tags":["license:\u001b[31mred"]}]"#,
            "not a short line",
        );
        refused(r#"[{"id":"a/b","pipeline_tag":{}}]"#, "not a string");
        let many: Vec<String> = (0..600).map(|i| format!("\"t{i}\"")).collect();
        refused(
            &format!(r#"[{{"id":"a/b","tags":[{}]}}]"#, many.join(",")),
            "more than 512",
        );
        let long = "x".repeat(300);
        refused(
            &format!(r#"[{{"id":"a/b","library_name":"{long}"}}]"#),
            "not a short line",
        );
        // Deep nesting and odd values never panic.
        for body in ["[[[[[]]]]]", "[null]", "[1]", "[{\"id\":null}]", "[]"] {
            let _ = parse_search(body.as_bytes(), 5);
        }
    }

    #[test]
    fn formats_and_sorts_parse_their_names_only() {
        assert_eq!(Format::parse("gguf").unwrap(), Format::Gguf);
        assert_eq!(Sort::parse("trending").unwrap(), Sort::Trending);
        assert!(Format::parse("onnx").is_err());
        assert!(Sort::parse("name").is_err());
    }
}
