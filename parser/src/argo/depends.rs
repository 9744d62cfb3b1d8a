//! Argo `depends` expressions: `A && (B.Failed || !C.Skipped)`.
//!
//! A small recursive-descent parser over the grammar
//!
//! ```text
//! expr    := and ('||' and)*
//! and     := unary ('&&' unary)*
//! unary   := '!' unary | primary
//! primary := '(' expr ')' | task ('.' result)?
//! result  := Succeeded | Failed | Errored | Skipped | Completed | Daemoned
//!          | AnySucceeded | AllFailed
//! ```
//!
//! kfcache schedules on the optimistic path, so every task an expression mentions is a
//! dependency, whatever result it is tested for; the parser's job is to find them all and to
//! refuse expressions Argo would refuse.
//!
//! Hostile expressions are bounded: at most [`MAX_DEPENDS_TOKENS`] tokens, parentheses and `!`
//! nested at most 128 deep, and a run of operands joined by one operator (`a || b || …`) is
//! built into a balanced tree, so that walking or dropping the tree never recurses deeper than
//! a few dozen levels.

use std::collections::HashSet;
use std::fmt;

use crate::limits::MAX_DEPENDS_TOKENS;

/// Task results a `depends` operand may test.
pub const RESULTS: &[&str] = &[
    "Succeeded",
    "Failed",
    "Errored",
    "Skipped",
    "Completed",
    "Daemoned",
    "AnySucceeded",
    "AllFailed",
];

/// Why an expression is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A task, optionally with the result it is tested for.
    Task {
        name: String,
        result: Option<String>,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Task names mentioned, in order of first mention, without repeats.
    pub fn tasks(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        self.collect(&mut names, &mut seen);
        names
    }

    fn collect<'e>(&'e self, names: &mut Vec<String>, seen: &mut HashSet<&'e str>) {
        match self {
            Expr::Task { name, .. } => {
                if seen.insert(name) {
                    names.push(name.clone());
                }
            }
            Expr::Not(inner) => inner.collect(names, seen),
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.collect(names, seen);
                b.collect(names, seen);
            }
        }
    }
}

/// Parse a `depends` expression.
pub fn parse(expression: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(expression)?;
    if tokens.len() > MAX_DEPENDS_TOKENS {
        return Err(ParseError(format!(
            "the expression has {} tokens, over the limit of {MAX_DEPENDS_TOKENS}",
            tokens.len()
        )));
    }
    if tokens.is_empty() {
        return Err(ParseError("the expression is empty".into()));
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let expr = parser.or()?;
    match parser.tokens.get(parser.pos) {
        None => Ok(expr),
        Some(token) => Err(ParseError(format!(
            "unexpected {token} after a complete expression"
        ))),
    }
}

/// The task names an expression depends on.
pub fn dependencies(expression: &str) -> Result<Vec<String>, ParseError> {
    parse(expression).map(|e| e.tasks())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    And,
    Or,
    Not,
    Open,
    Close,
    Operand(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::And => f.write_str("`&&`"),
            Token::Or => f.write_str("`||`"),
            Token::Not => f.write_str("`!`"),
            Token::Open => f.write_str("`(`"),
            Token::Close => f.write_str("`)`"),
            Token::Operand(s) => write!(f, "`{s}`"),
        }
    }
}

fn is_operand_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '!' => {
                chars.next();
                tokens.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    _ => Token::Not,
                });
            }
            '&' | '|' => {
                chars.next();
                if chars.next_if(|&(_, next)| next == c).is_none() {
                    return Err(ParseError(format!(
                        "single `{c}` at offset {i}; use `{c}{c}`"
                    )));
                }
                tokens.push(if c == '&' { Token::And } else { Token::Or });
            }
            c if is_operand_char(c) => {
                let mut word = String::new();
                while let Some((_, c)) = chars.next_if(|&(_, c)| is_operand_char(c)) {
                    word.push(c);
                }
                tokens.push(Token::Operand(word));
            }
            other => {
                return Err(ParseError(format!(
                    "unexpected character `{other}` at offset {i}"
                )))
            }
        }
    }
    Ok(tokens)
}

/// Nesting limit for parentheses and `!`, so hostile input cannot overflow the stack.
const MAX_DEPTH: usize = 128;

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut operands = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            operands.push(self.and()?);
        }
        balanced(operands, Expr::Or).ok_or_else(|| ParseError("the expression is empty".into()))
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut operands = vec![self.unary()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            operands.push(self.unary()?);
        }
        balanced(operands, Expr::And).ok_or_else(|| ParseError("the expression is empty".into()))
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let result = if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            self.unary().map(|e| Expr::Not(Box::new(e)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        result
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let token = self.peek().cloned();
        self.pos += 1;
        match token {
            Some(Token::Open) => {
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(ParseError("missing `)`".into()));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Operand(word)) => operand(&word),
            Some(other) => Err(ParseError(format!("expected a task name, found {other}"))),
            None => Err(ParseError(
                "the expression ends where a task name is expected".into(),
            )),
        }
    }
}

/// Operands joined by one associative operator, as a tree of logarithmic depth; the operands
/// keep their order from left to right. Two operands make `join(a, b)`, as a left fold would.
/// `None` only for no operands at all.
fn balanced(mut operands: Vec<Expr>, join: fn(Box<Expr>, Box<Expr>) -> Expr) -> Option<Expr> {
    if operands.len() <= 1 {
        return operands.pop();
    }
    let right = operands.split_off(operands.len().div_ceil(2));
    Some(join(
        Box::new(balanced(operands, join)?),
        Box::new(balanced(right, join)?),
    ))
}

fn operand(word: &str) -> Result<Expr, ParseError> {
    let (name, result) = match word.rsplit_once('.') {
        Some((name, result)) => (name, Some(result)),
        None => (word, None),
    };
    if name.is_empty() || name.contains('.') {
        return Err(ParseError(format!(
            "`{word}` is not `task` or `task.Result`"
        )));
    }
    if let Some(result) = result {
        if !RESULTS.contains(&result) {
            return Err(ParseError(format!(
                "unknown task result `{result}` in `{word}` (expected one of {})",
                RESULTS.join(", ")
            )));
        }
    }
    Ok(Expr::Task {
        name: name.to_string(),
        result: result.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mentioned_task_is_a_dependency() {
        let deps = dependencies("A && (B.Failed || !C.Skipped) && A.Succeeded").expect("valid");
        assert_eq!(deps, ["A", "B", "C"]);
    }

    #[test]
    fn all_results_are_accepted() {
        for result in RESULTS {
            let deps = dependencies(&format!("task-1.{result}")).expect("valid");
            assert_eq!(deps, ["task-1"]);
        }
    }

    #[test]
    fn precedence_binds_and_tighter_than_or() {
        let expr = parse("a || b && c").expect("valid");
        let Expr::Or(left, right) = expr else {
            panic!("not an or")
        };
        assert_eq!(
            *left,
            Expr::Task {
                name: "a".into(),
                result: None
            }
        );
        assert!(matches!(*right, Expr::And(_, _)));
    }

    #[test]
    fn not_and_parentheses_nest() {
        let expr = parse("!(a.Failed || b)").expect("valid");
        let Expr::Not(inner) = expr else {
            panic!("not a not")
        };
        assert!(matches!(*inner, Expr::Or(_, _)));
    }

    #[test]
    fn invalid_expressions_are_refused() {
        for bad in [
            "",
            "a &&",
            "&& a",
            "(a || b",
            "a || b)",
            "a & b",
            "a.Bogus",
            "a b",
            "a.b.Succeeded",
            "a $ b",
            "()",
        ] {
            assert!(parse(bad).is_err(), "accepted `{bad}`");
        }
    }

    #[test]
    fn long_chains_build_shallow_trees() {
        fn depth(expr: &Expr) -> usize {
            match expr {
                Expr::Task { .. } => 1,
                Expr::Not(inner) => 1 + depth(inner),
                Expr::And(a, b) | Expr::Or(a, b) => 1 + depth(a).max(depth(b)),
            }
        }
        let names: Vec<String> = (0..50_000).map(|i| format!("t{i}")).collect();
        let expr = parse(&names.join(" || ")).expect("valid");
        assert!(depth(&expr) <= 20, "depth {}", depth(&expr));
        assert_eq!(expr.tasks(), names);
        let expr = parse("a && b && c || d").expect("valid");
        assert_eq!(expr.tasks(), ["a", "b", "c", "d"]);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = format!("{}a{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&text).is_err());
        let text = format!("{}a", "!".repeat(10_000));
        assert!(parse(&text).is_err());
    }
}
