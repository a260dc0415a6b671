//! Marathon's label selector for `GET /v2/apps?label=…` (reference §1.1), as a pure parser.
//!
//! Grammar (Marathon's `LabelSelectorParsers`): selectors separated by commas, all of which
//! must hold. `key` (exists), `key==v`, `key!=v`, `key in (a,b)`, `key notin (a,b)`. Terms are
//! `[-A-Za-z0-9_.]`; any other character must be escaped with a backslash. Whitespace between
//! tokens is ignored. Every form requires the label to exist, `!=` and `notin` included.

use std::collections::BTreeMap;

/// One condition on a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Exists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Exists(k) => labels.contains_key(k),
            Selector::Equals(k, v) => labels.get(k).is_some_and(|x| x == v),
            Selector::NotEquals(k, v) => labels.get(k).is_some_and(|x| x != v),
            Selector::In(k, set) => labels.get(k).is_some_and(|x| set.contains(x)),
            Selector::NotIn(k, set) => labels.get(k).is_some_and(|x| !set.contains(x)),
        }
    }
}

/// Selectors that must all match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelectors(pub Vec<Selector>);

impl LabelSelectors {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|s| s.matches(labels))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Term(String),
    Eq,
    NotEq,
    Open,
    Close,
    Comma,
}

fn is_term_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            ',' => {
                chars.next();
                tokens.push(Token::Comma);
            }
            '=' | '!' => {
                chars.next();
                if chars.next() != Some('=') {
                    return Err(format!("'{c}=' expected"));
                }
                tokens.push(if c == '=' { Token::Eq } else { Token::NotEq });
            }
            c if is_term_char(c) || c == '\\' => {
                let mut term = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '\\' {
                        chars.next();
                        match chars.next() {
                            Some(escaped) => term.push(escaped),
                            None => return Err("escape at the end of the input".into()),
                        }
                    } else if is_term_char(c) {
                        term.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                tokens.push(Token::Term(term));
            }
            other => return Err(format!("unexpected character '{other}'")),
        }
    }
    Ok(tokens)
}

/// Parses a selector string; the error is Marathon's 422 message.
pub fn parse(input: &str) -> Result<LabelSelectors, String> {
    parse_tokens(input)
        .map_err(|reason| format!("Can not parse label selector {input}. Reason: {reason}"))
}

fn parse_tokens(input: &str) -> Result<LabelSelectors, String> {
    let tokens = tokenize(input)?;
    let mut selectors = Vec::new();
    let mut i = 0;
    let term = |i: usize| match tokens.get(i) {
        Some(Token::Term(t)) => Ok(t.clone()),
        Some(other) => Err(format!("term expected but {other:?} found")),
        None => Err("term expected but end of input found".to_string()),
    };
    while i < tokens.len() {
        let key = term(i)?;
        i += 1;
        let selector = match tokens.get(i) {
            Some(Token::Eq) => {
                let v = term(i + 1)?;
                i += 2;
                Selector::Equals(key, v)
            }
            Some(Token::NotEq) => {
                let v = term(i + 1)?;
                i += 2;
                Selector::NotEquals(key, v)
            }
            Some(Token::Term(op))
                if (op == "in" || op == "notin") && tokens.get(i + 1) == Some(&Token::Open) =>
            {
                let not = op == "notin";
                i += 2;
                let mut set = Vec::new();
                loop {
                    match tokens.get(i) {
                        Some(Token::Close) if set.is_empty() => {
                            i += 1;
                            break;
                        }
                        Some(Token::Term(t)) => {
                            set.push(t.clone());
                            i += 1;
                            match tokens.get(i) {
                                Some(Token::Comma) => i += 1,
                                Some(Token::Close) => {
                                    i += 1;
                                    break;
                                }
                                _ => return Err("',' or ')' expected".into()),
                            }
                        }
                        _ => return Err("term or ')' expected".into()),
                    }
                }
                if not {
                    Selector::NotIn(key, set)
                } else {
                    Selector::In(key, set)
                }
            }
            _ => Selector::Exists(key),
        };
        selectors.push(selector);
        match tokens.get(i) {
            None => break,
            Some(Token::Comma) => {
                i += 1;
                if i == tokens.len() {
                    return Err("selector expected after ','".into());
                }
            }
            Some(other) => return Err(format!("',' expected but {other:?} found")),
        }
    }
    Ok(LabelSelectors(selectors))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_form_parses_and_matches() {
        let l = labels(&[("env", "prod"), ("tier", "web"), ("a b", "x,y")]);
        let ok = |s: &str| parse(s).expect(s).matches(&l);
        assert!(ok("env"));
        assert!(!ok("missing"));
        assert!(ok("env==prod"));
        assert!(ok("env == prod, tier"));
        assert!(!ok("env!=prod"));
        assert!(!ok("missing!=prod"));
        assert!(ok("tier in (web, api)"));
        assert!(!ok("tier notin (web)"));
        assert!(ok("tier notin ()"));
        assert!(ok(r"a\ b==x\,y"));
        assert!(ok(""));
    }

    #[test]
    fn bad_selectors_are_reported() {
        for bad in [
            "env==",
            "env=prod",
            "tier in (web",
            "env,",
            "a b",
            "x == (y)",
            "k in (a b)",
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(
                e.starts_with(&format!("Can not parse label selector {bad}.")),
                "{e}"
            );
        }
    }
}
