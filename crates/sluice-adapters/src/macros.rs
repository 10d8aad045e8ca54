//! Macros in file names (FILE send ports) and URLs (HTTP send ports).
//!
//! | macro | becomes |
//! |---|---|
//! | `%MessageId%` | the message id |
//! | `%SourceFileName%` | `file.name` of the message (the received file's name) |
//! | `%SourceFileStem%` | that name without its last extension |
//! | `%datetime%` | the UTC time of sending, `2026-11-21T154501` |
//! | `%property:ns.name%` | the value of any context property |
//! | `%%` | a literal `%` |

use sluice_model::{Context, Key, MessageId};

use crate::{Need, TransmitError};

/// Why a template did not render for a message.
#[derive(Debug, Clone, PartialEq)]
pub enum RenderError {
    /// The message lacks a property a macro needs: it fails the same way
    /// until its context changes.
    Missing { property: Key, message: String },
    /// The result is not usable (not a plain file name).
    Invalid(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Missing { message, .. } | RenderError::Invalid(message) => f.write_str(message),
        }
    }
}

/// A message without a property the port needs, or whose values render a
/// name that is not plain, is not sent again as it is: it needs an edit
/// (its suspended entry is not resumable; it is resubmitted edited).
impl From<RenderError> for TransmitError {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::Missing { property, message } => TransmitError::needs_edit(format!(
                "{message}: resuming it would fail the same way; resubmit it with {property} set \
                 (or add `and {property} exists` to the port's filter)"
            )),
            // The template itself was checked at load: what is not a plain
            // name came from the message's values.
            RenderError::Invalid(message) => TransmitError::needs_edit(message),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    MessageId,
    SourceFileName,
    SourceFileStem,
    DateTime,
    Property(Key),
}

/// A parsed template: text with `%macros%`.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find('%') {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 1..];
            let end = after
                .find('%')
                .ok_or_else(|| format!("`{template}`: a `%` is not closed (write %% for a literal %)"))?;
            let name = &after[..end];
            pieces.push(match name {
                "" => Piece::Text("%".into()),
                "MessageId" | "MessageID" => Piece::MessageId,
                "SourceFileName" => Piece::SourceFileName,
                "SourceFileStem" => Piece::SourceFileStem,
                "datetime" => Piece::DateTime,
                other => match other.strip_prefix("property:") {
                    Some(k) => Piece::Property(
                        Key::parse(k).ok_or_else(|| format!("`{template}`: `{k}` is not a property key (namespace.name)"))?,
                    ),
                    None => {
                        return Err(format!(
                            "`{template}`: unknown macro %{other}% (known: %MessageId%, %SourceFileName%, %SourceFileStem%, %datetime%, %property:ns.name%)"
                        ));
                    }
                },
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err("the file name is empty".into());
        }
        Ok(Template {
            source: template.to_string(),
            pieces,
        })
    }

    /// The properties the template cannot render without, each with the
    /// macro as written; `key` is the configuration key that holds it.
    pub fn needs(&self, key: &'static str) -> Vec<Need> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Property(k) => Some((format!("%property:{k}%"), k.clone())),
                Piece::SourceFileName => Some(("%SourceFileName%".to_string(), file_name_key())),
                Piece::SourceFileStem => Some(("%SourceFileStem%".to_string(), file_name_key())),
                _ => None,
            })
            .map(|(macro_text, property)| Need {
                key,
                macro_text,
                property,
            })
            .collect()
    }

    /// A URL for a message: each macro's value is percent-encoded as RFC
    /// 3986 asks (the unreserved `A-Z a-z 0-9 - . _ ~` stay as they are,
    /// everything else, `/ ? # %` included, is encoded), so a context value
    /// can fill a path segment or a query value, never add one; a value
    /// that is all `.` or `..` is encoded too (it would climb a level). The
    /// template's own text is kept as written.
    pub fn render_url(&self, id: MessageId, ctx: &Context) -> Result<String, RenderError> {
        self.expand(id, ctx, &encode_url_value)
    }

    /// Text for a message (a mail's subject, its recipients): the values as
    /// they are. What the text may hold is the caller's to check.
    pub fn render_text(&self, id: MessageId, ctx: &Context) -> Result<String, RenderError> {
        self.expand(id, ctx, &|v: &str| v.to_string())
    }

    /// The file name for a message. Fails if a macro has no value, or if the
    /// result is not a plain file name (no `/`, not `.` or `..`): a context
    /// value must never steer a write outside the folder.
    pub fn render(&self, id: MessageId, ctx: &Context) -> Result<String, RenderError> {
        let out = self.expand(id, ctx, &|v: &str| v.to_string())?;
        Self::check_file_name(&self.source, out).map_err(RenderError::Invalid)
    }

    fn expand(&self, id: MessageId, ctx: &Context, value: &dyn Fn(&str) -> String) -> Result<String, RenderError> {
        let source_name = || {
            ctx.get("file", "name")
                .map(|p| p.value.to_text())
                .ok_or_else(|| RenderError::Missing {
                    property: file_name_key(),
                    message: format!(
                        "`{}` uses the source file name, but the message has no file.name property",
                        self.source
                    ),
                })
        };
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::MessageId => out.push_str(&id.to_string()),
                Piece::SourceFileName => out.push_str(&value(&source_name()?)),
                Piece::SourceFileStem => {
                    let n = source_name()?;
                    out.push_str(&value(match n.rsplit_once('.') {
                        Some((stem, _)) if !stem.is_empty() => stem,
                        _ => &n,
                    }));
                }
                Piece::DateTime => {
                    let t = time::OffsetDateTime::now_utc();
                    out.push_str(&format!(
                        "{:04}-{:02}-{:02}T{:02}{:02}{:02}",
                        t.year(),
                        t.month() as u8,
                        t.day(),
                        t.hour(),
                        t.minute(),
                        t.second()
                    ));
                }
                Piece::Property(k) => out.push_str(&value(
                    &ctx.get(&k.namespace, &k.name)
                        .ok_or_else(|| RenderError::Missing {
                            property: k.clone(),
                            message: format!("`{}` uses property {k}, which the message does not have", self.source),
                        })?
                        .value
                        .to_text(),
                )),
            }
        }
        Ok(out)
    }

    fn check_file_name(source: &str, out: String) -> Result<String, String> {
        crate::support::plain_file_name(&out).map_err(|why| {
            format!(
                "the file name `{source}` is refused for this message: {why}; a value from the message may not \
                 name a file outside the folder (resubmit the message with another value, or terminate it)"
            )
        })?;
        Ok(out)
    }

    /// For a FILE send port's `file_name`, at load: refuse a template whose
    /// own text makes every name it renders fail [`Template::render`]: a
    /// `/`, `\` or NUL written in it, a name without macros that is not a
    /// plain file name, or a start that is Sluice's own (`.sluice-`). Only
    /// what a message's values bring is left to be checked per message.
    pub fn check_file_name_template(&self) -> Result<(), String> {
        let source = &self.source;
        for p in &self.pieces {
            if let Piece::Text(t) = p
                && let Some(c) = t.chars().find(|c| matches!(c, '/' | '\\' | '\0'))
            {
                return Err(format!(
                    "`{source}` has a `{}`: a FILE send port writes only into its own folder \
                     (to write into a subfolder, put it in `path`)",
                    c.escape_debug()
                ));
            }
        }
        let all_text = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<Option<String>>();
        if let Some(all) = all_text {
            crate::support::plain_file_name(&all).map_err(|why| format!("`{source}`: {why}"))?;
        } else if let Some(Piece::Text(first)) = self.pieces.first()
            && first.starts_with(crate::support::names::RESERVED_PREFIX)
        {
            return Err(format!(
                "`{source}` starts with {}: such names are Sluice's own",
                crate::support::names::RESERVED_PREFIX
            ));
        }
        Ok(())
    }
}

/// `file.name`, what `%SourceFileName%` and `%SourceFileStem%` render from.
fn file_name_key() -> Key {
    Key {
        namespace: "file".into(),
        name: "name".into(),
    }
}

/// What RFC 3986 leaves unencoded: `A-Z a-z 0-9 - . _ ~`.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A macro's value inside a URL (see [`Template::render_url`]).
fn encode_url_value(v: &str) -> String {
    if v == "." || v == ".." {
        return v.replace('.', "%2E");
    }
    percent_encoding::utf8_percent_encode(v, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_values_keep_unreserved_characters_and_cannot_add_a_part() {
        let mut ctx = Context::new();
        ctx.promote("file", "name", "a.txt");
        ctx.promote("x", "v", "A-z_0.9~ /?#%&=é");
        ctx.promote("x", "up", "..");
        let id = MessageId::new();
        let url = |t: &str| Template::parse(t).unwrap().render_url(id, &ctx).unwrap();
        assert_eq!(url("http://h/in/%SourceFileName%"), "http://h/in/a.txt");
        assert_eq!(
            url("http://h/in?v=%property:x.v%"),
            "http://h/in?v=A-z_0.9~%20%2F%3F%23%25%26%3D%C3%A9"
        );
        assert_eq!(url("http://h/in/%property:x.up%/x"), "http://h/in/%2E%2E/x");
    }

    #[test]
    fn renders_macros() {
        let mut ctx = Context::new();
        ctx.promote("file", "name", "orders.xml");
        ctx.write("app", "customer", "ACME");
        let id = MessageId::new();
        let t = Template::parse("%SourceFileStem%-%property:app.customer%-%MessageId%.out%%").unwrap();
        assert_eq!(t.render(id, &ctx).unwrap(), format!("orders-ACME-{id}.out%"));
        assert_eq!(
            Template::parse("%SourceFileName%").unwrap().render(id, &ctx).unwrap(),
            "orders.xml"
        );
        assert!(
            Template::parse("%datetime%.txt")
                .unwrap()
                .render(id, &ctx)
                .unwrap()
                .ends_with(".txt")
        );
    }

    #[test]
    fn a_missing_property_is_named_and_needs_an_edit() {
        let t = Template::parse("http://h/%property:order.id%/%SourceFileStem%").unwrap();
        let needs: Vec<(String, String)> = t
            .needs("url")
            .into_iter()
            .map(|n| (n.macro_text, n.property.to_string()))
            .collect();
        assert_eq!(
            needs,
            [
                ("%property:order.id%".to_string(), "order.id".to_string()),
                ("%SourceFileStem%".to_string(), "file.name".to_string())
            ]
        );
        assert!(
            Template::parse("%MessageId%-%datetime%")
                .unwrap()
                .needs("file_name")
                .is_empty()
        );
        let e = t.render_url(MessageId::new(), &Context::new()).unwrap_err();
        let RenderError::Missing { property, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(property.to_string(), "order.id");
        let e = TransmitError::from(e);
        assert!(!e.retryable && e.needs_edit, "{e}");
        assert!(e.message.contains("resubmit it with order.id set"), "{e}");
        // A name that is not plain came from the message: it needs an
        // edit too (the template's own text is checked at load).
        let mut ctx = Context::new();
        ctx.promote("file", "name", "a/b");
        let e = TransmitError::from(
            Template::parse("%SourceFileName%")
                .unwrap()
                .render(MessageId::new(), &ctx)
                .unwrap_err(),
        );
        assert!(!e.retryable && e.needs_edit, "{e}");
    }

    #[test]
    fn refuses_bad_templates_and_names() {
        assert!(Template::parse("%Nope%").unwrap_err().contains("unknown macro %Nope%"));
        assert!(Template::parse("a%b").unwrap_err().contains("not closed"));
        let mut ctx = Context::new();
        ctx.promote("file", "name", "../../etc/passwd");
        let t = Template::parse("%SourceFileName%").unwrap();
        assert!(
            t.render(MessageId::new(), &ctx)
                .unwrap_err()
                .to_string()
                .contains("not a plain file name")
        );
        assert!(
            t.render(MessageId::new(), &Context::new())
                .unwrap_err()
                .to_string()
                .contains("no file.name")
        );
    }
}
