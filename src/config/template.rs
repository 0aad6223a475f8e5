//! Asset ids templated from a watched file's name.

use super::AssetTemplate;

/// Why an asset template was refused. Offsets are byte offsets into the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown placeholder \"{{{name}}}\" in asset {template:?}: expected {{name}} (the file name), {{stem}} (without the last extension) or {{ext}} (the last extension)"
    )]
    Unknown {
        template: String,
        name: String,
        offset: usize,
    },
    #[error(
        "unbalanced \"{brace}\" in asset {template:?}: placeholders are written {{name}}, {{stem}} or {{ext}}, and braces cannot appear otherwise"
    )]
    Unbalanced {
        template: String,
        brace: char,
        offset: usize,
    },
}

impl TemplateError {
    /// Where in the template the problem is.
    pub fn offset(&self) -> usize {
        match self {
            TemplateError::Unknown { offset, .. } | TemplateError::Unbalanced { offset, .. } => {
                *offset
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Literal(&'a str),
    Name,
    Stem,
    Ext,
}

fn segments(template: &str) -> Result<Vec<Segment<'_>>, TemplateError> {
    let unbalanced = |brace, offset| TemplateError::Unbalanced {
        template: template.to_owned(),
        brace,
        offset,
    };
    let mut out = Vec::new();
    let mut rest = template;
    let mut pos = 0;
    while let Some(i) = rest.find(['{', '}']) {
        if rest.as_bytes()[i] == b'}' {
            return Err(unbalanced('}', pos + i));
        }
        if i > 0 {
            out.push(Segment::Literal(&rest[..i]));
        }
        let inner = &rest[i + 1..];
        let close = match inner.find(['{', '}']) {
            Some(j) if inner.as_bytes()[j] == b'}' => j,
            _ => return Err(unbalanced('{', pos + i)),
        };
        out.push(match &inner[..close] {
            "name" => Segment::Name,
            "stem" => Segment::Stem,
            "ext" => Segment::Ext,
            other => {
                return Err(TemplateError::Unknown {
                    template: template.to_owned(),
                    name: other.to_owned(),
                    offset: pos + i,
                });
            }
        });
        let consumed = i + 1 + close + 1;
        pos += consumed;
        rest = &rest[consumed..];
    }
    if !rest.is_empty() {
        out.push(Segment::Literal(rest));
    }
    Ok(out)
}

/// `(stem, ext)`: the name split at its last dot. A leading dot starts a hidden name, not an
/// extension, as with `Path::file_stem`.
fn split_name(file_name: &str) -> (&str, &str) {
    match file_name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, ext),
        _ => (file_name, ""),
    }
}

impl AssetTemplate {
    /// Checks the placeholders (`{name}`, `{stem}`, `{ext}`) and braces of a template.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        segments(template)?;
        Ok(Self(template.to_owned()))
    }

    /// The asset id for a file name: `{name}` is the whole name, `{stem}` the name without its
    /// last extension, `{ext}` that extension without the dot (empty if none).
    ///
    /// A template that does not parse (built by hand, bypassing [`AssetTemplate::parse`]) is
    /// returned as is.
    pub fn render(&self, file_name: &str) -> String {
        let Ok(segments) = segments(&self.0) else {
            return self.0.clone();
        };
        let (stem, ext) = split_name(file_name);
        segments
            .into_iter()
            .map(|s| match s {
                Segment::Literal(l) => l,
                Segment::Name => file_name,
                Segment::Stem => stem,
                Segment::Ext => ext,
            })
            .collect()
    }

    /// True when the id does not depend on the file name.
    pub fn is_literal(&self) -> bool {
        matches!(segments(&self.0), Ok(s) if s.iter().all(|s| matches!(s, Segment::Literal(_))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> AssetTemplate {
        AssetTemplate::parse(s).unwrap()
    }

    #[test]
    fn renders_placeholders() {
        assert_eq!(t("{name}").render("radar.h5"), "radar.h5");
        assert_eq!(t("{stem}-v2.{ext}").render("a.tar.gz"), "a.tar-v2.gz");
        assert_eq!(t("x-{ext}").render("README"), "x-");
        assert_eq!(t("{stem}").render(".hidden"), ".hidden");
        assert_eq!(t("map.tif").render("whatever.h5"), "map.tif");
    }

    #[test]
    fn literal_or_not() {
        assert!(t("map.tif").is_literal());
        assert!(!t("{stem}.tif").is_literal());
    }

    #[test]
    fn refuses_unknown_and_unbalanced() {
        let e = AssetTemplate::parse("a-{date}").unwrap_err();
        assert_eq!(e.offset(), 2);
        assert!(e.to_string().contains("\"{date}\""), "{e}");
        assert!(e.to_string().contains("{stem}"), "{e}");
        for (s, at) in [("{name", 0), ("name}", 4), ("{na{me}", 0), ("a{}", 1)] {
            assert_eq!(AssetTemplate::parse(s).unwrap_err().offset(), at, "{s}");
        }
    }
}
