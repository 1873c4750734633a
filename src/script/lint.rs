//! Authoring checks on a compiled script (SPEC §10 "Authoring"): calls to
//! functions that exist nowhere, and the outputs of a recv script that nobody
//! reads.
//!
//! A call is known when the engine has a function of that name (the
//! Switchyard API, Rhai's standard packages and the keyword functions, read
//! from the engine itself, so a function registered later is known at once),
//! when the script defines it, or, for `m::f()`, when the module imported as
//! `m` exports it. To raise no false alarm, a name that the script also uses
//! as a variable (a function pointer called like a function) or as a map key
//! or property (a function pointer called like a method) is never reported,
//! nor is a call into a module that cannot be found.

use std::collections::{BTreeSet, HashMap, HashSet};

use rhai::{ASTNode, Engine, Expr, Stmt, AST};

/// One finding, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Finding {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong, with the nearest known names.
    pub message: String,
}

/// Functions that Rhai resolves itself, without a registered function.
const KEYWORDS: &[&str] = &[
    "print",
    "debug",
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_def_var",
    "is_def_fn",
    "is_shared",
    "eval",
];

/// Every function name the engine knows.
#[derive(Debug, Default)]
pub struct Known {
    names: HashSet<String>,
}

impl Known {
    /// The names registered in `engine`, its standard packages included.
    pub fn of(engine: &Engine) -> Self {
        let mut names: HashSet<String> = engine
            .gen_fn_signatures(true)
            .iter()
            .filter_map(|sig| sig.split('(').next())
            .map(|name| name.trim().to_owned())
            .collect();
        names.extend(KEYWORDS.iter().map(|k| (*k).to_owned()));
        Self { names }
    }

    /// Every name.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.names.iter()
    }

    /// `true` when the engine has a function called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

/// The functions a module script exports (its non-private functions).
pub fn exports(ast: &AST) -> HashSet<String> {
    ast.iter_functions()
        .filter(|f| !f.access.is_private())
        .map(|f| f.name.to_owned())
        .collect()
}

/// A call found in the script.
struct Call {
    name: String,
    /// The alias of `m::name()`, if namespaced with one segment.
    module: Option<String>,
    /// More than one namespace segment: not checked.
    deep: bool,
    method: bool,
    line: usize,
    col: usize,
}

impl Call {
    fn of(call: &rhai::FnCallExpr, pos: rhai::Position, method: bool) -> Self {
        let segments = &call.namespace.path;
        Call {
            name: call.name.to_string(),
            module: (segments.len() == 1).then(|| segments[0].name.to_string()),
            deep: segments.len() > 1,
            method,
            line: pos.line().unwrap_or(1),
            col: pos.position().unwrap_or(1),
        }
    }
}

/// Calls to functions that exist nowhere. `module` gives the exports of the
/// script imported by path (`import "path" as m`), `None` when unknown.
pub fn unknown_calls(
    known: &Known,
    ast: &AST,
    module: &dyn Fn(&str) -> Option<HashSet<String>>,
) -> Vec<Finding> {
    let mut calls = Vec::new();
    let mut variables = HashSet::new();
    let mut properties = HashSet::new();
    let mut imports: HashMap<String, String> = HashMap::new();
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos) | Expr::MethodCall(call, pos))) => {
                let method = matches!(path.last(), Some(ASTNode::Expr(Expr::MethodCall(..))));
                calls.push(Call::of(call, *pos, method));
            }
            Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => calls.push(Call::of(call, *pos, false)),
            Some(ASTNode::Expr(Expr::Variable(v, ..))) => {
                variables.insert(v.1.to_string());
            }
            Some(ASTNode::Stmt(Stmt::Var(v, ..))) => {
                variables.insert(v.0.name.to_string());
            }
            Some(ASTNode::Expr(Expr::Property(p, ..))) => {
                properties.insert(p.2.to_string());
            }
            Some(ASTNode::Expr(Expr::Map(m, ..))) => {
                properties.extend(m.0.iter().map(|(k, _)| k.name.to_string()));
                properties.extend(m.1.keys().map(|k| k.to_string()));
            }
            // A map literal the optimizer folded into a constant.
            Some(ASTNode::Expr(Expr::DynamicConstant(value, ..))) => {
                if let Some(map) = value.read_lock::<rhai::Map>() {
                    properties.extend(map.keys().map(|k| k.to_string()));
                }
            }
            Some(ASTNode::Stmt(Stmt::Import(x, ..))) => {
                if let (Expr::StringConstant(target, ..), alias) = (&x.0, &x.1) {
                    imports.insert(alias.name.to_string(), target.to_string());
                }
            }
            _ => {}
        }
        true
    });
    let defined: HashSet<String> = ast.iter_functions().map(|f| f.name.to_owned()).collect();
    let mut exports_of: HashMap<String, Option<HashSet<String>>> = HashMap::new();
    let mut out = Vec::new();
    for call in calls {
        if call.deep
            || !call
                .name
                .starts_with(|c: char| c.is_alphabetic() || c == '_')
        {
            continue;
        }
        let (candidates, what): (Vec<String>, String) = match &call.module {
            Some(alias) => {
                let Some(target) = imports.get(alias) else {
                    continue;
                };
                let exported = exports_of
                    .entry(target.clone())
                    .or_insert_with(|| module(target))
                    .clone();
                let Some(exported) = exported else {
                    continue;
                };
                if exported.contains(&call.name) {
                    continue;
                }
                (
                    exported.into_iter().collect(),
                    format!(
                        "module \"{target}\" (imported as {alias}) exports no function {}",
                        call.name
                    ),
                )
            }
            None => {
                if known.has(&call.name)
                    || defined.contains(&call.name)
                    || variables.contains(&call.name)
                    || (call.method && properties.contains(&call.name))
                {
                    continue;
                }
                let mut pool: Vec<String> = known.names.iter().cloned().collect();
                pool.extend(defined.iter().cloned());
                (pool, format!("unknown function {}", call.name))
            }
        };
        let near = nearest(&call.name, &candidates);
        let message = if near.is_empty() {
            what
        } else {
            format!("{what} (did you mean {}?)", near.join(", "))
        };
        out.push(Finding {
            line: call.line,
            col: call.col,
            message,
        });
    }
    out.sort_by_key(|f| (f.line, f.col));
    out.dedup();
    out
}

/// Up to three names close to `name`, the closest first.
pub fn nearest(name: &str, candidates: &[String]) -> Vec<String> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    let lower = name.to_lowercase();
    let mut scored: BTreeSet<(usize, &str)> = BTreeSet::new();
    for c in candidates {
        if !c.starts_with(|ch: char| ch.is_alphabetic() || ch == '_') || c.contains('$') {
            continue;
        }
        let d = strsim::damerau_levenshtein(&lower, &c.to_lowercase());
        if d <= limit {
            scored.insert((d, c.as_str()));
        }
    }
    scored
        .into_iter()
        .take(3)
        .map(|(_, c)| c.to_owned())
        .collect()
}

/// The outputs of a recv script (`status`, `body`, `headers`) that its top
/// level sets, each with where it is first set.
pub fn outputs_set(ast: &AST) -> Vec<(&'static str, usize, usize)> {
    const OUTPUTS: &[&str] = &["status", "body", "headers"];
    let mut found: Vec<(&'static str, usize, usize)> = Vec::new();
    let mut note = |name: &str, pos: rhai::Position| {
        if let Some(out) = OUTPUTS.iter().find(|o| **o == name) {
            if !found.iter().any(|(n, ..)| n == out) {
                found.push((out, pos.line().unwrap_or(1), pos.position().unwrap_or(1)));
            }
        }
    };
    // Top-level statements only: a function cannot reach the script's scope.
    let top = ast.clone_statements_only();
    top.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Stmt(Stmt::Assignment(x))) => {
                let mut target = &x.1.lhs;
                while let Expr::Dot(b, ..) | Expr::Index(b, ..) = target {
                    target = &b.lhs;
                }
                if let Expr::Variable(v, _, pos) = target {
                    note(&v.1, *pos);
                }
            }
            Some(ASTNode::Stmt(Stmt::Var(v, _, pos))) => note(&v.0.name, *pos),
            _ => {}
        }
        true
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> (Engine, Known) {
        let e = crate::script::ScriptEngine::new();
        let known = Known::of(e.engine());
        (Engine::new(), known)
    }

    fn lint(src: &str) -> Vec<Finding> {
        let (e, known) = engine();
        let ast = e.compile(src).unwrap();
        let module = |path: &str| {
            (path == "lib").then(|| ["helper".to_string()].into_iter().collect::<HashSet<_>>())
        };
        unknown_calls(&known, &ast, &module)
    }

    #[test]
    fn a_misspelt_function_is_found_with_the_nearest_names() {
        let found = lint("let x = 1;\nlet s = hmac_sha265_hex(\"k\", \"m\");");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].line, found[0].col), (2, 9));
        assert!(
            found[0]
                .message
                .contains("unknown function hmac_sha265_hex")
                && found[0].message.contains("hmac_sha256_hex"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn correct_scripts_raise_no_alarm() {
        let src = r#"
            import "lib" as lib;
            import "elsewhere" as other;
            fn double(x) { x * 2 }
            fn area() { this.w * this.h }
            let f = |x| x + 1;
            let g = Fn("double");
            let obj = #{ w: 2, h: 3, act: |x| x };
            obj.act(1);
            let r = [f(1), g.call(2), double(3), lib::helper(), other::anything()];
            r.push(obj.area());
            r.len(); "abc".len(); r.map(|v| v * 2); type_of(r); to_json(r);
            parse_json("{}"); kv_get("k"); webquery(#{}); print(1); debug(2);
            if is_def_fn("double", 1) { curry(f, 1); }
            let d = 1.5.floor(); let s = `${d}`; s.sub_string(0, 1);
        "#;
        assert_eq!(lint(src), vec![]);
    }

    #[test]
    fn a_module_function_it_does_not_export_is_found() {
        let found = lint("import \"lib\" as lib;\nlib::helpr();");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].message.contains("did you mean helper"),
            "{found:?}"
        );
    }

    #[test]
    fn outputs_set_at_the_top_level_are_listed() {
        let e = Engine::new();
        let ast = e
            .compile("fn f() { let body = 1; }\nstatus = 401;\nbody.x = 1;\nlet data = 2;")
            .unwrap();
        assert_eq!(outputs_set(&ast), vec![("status", 2, 1), ("body", 3, 1)]);
    }
}
