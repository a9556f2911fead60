//! A crontab job's command, read the way `/bin/sh` reads it (quotes,
//! backslashes, operators, redirects, expansions) after cron's own `%`
//! handling: an argv run without a shell when nothing in it needs one, else
//! `sh -c` and the reasons; a leading `cd DIR &&` becomes the working
//! directory either way.

use std::collections::BTreeMap;

/// What a job's command becomes.
#[derive(Debug, PartialEq)]
pub(super) struct Found {
    pub cmd: Vec<String>,
    pub cwd: Option<String>,
    /// Assignments before the program (`FOO=1 ./x`).
    pub env: BTreeMap<String, String>,
    /// The job's name, before it is made unique.
    pub name: String,
    /// What the report says beside it (why it needs a shell, what it lost).
    pub notes: Vec<String>,
}

/// A crontab command: cron's `%` first (`\%` is a `%`, the first bare one
/// starts the standard input), then the shell's grammar.
pub(super) fn command_of(command: &str, shell: &str) -> Result<Found, String> {
    let (text, stdin) = percent(command);
    let (tokens, comment) = lex(&text)?;
    let mut items: &[Token] = &tokens;
    let mut cwd = None;
    let mut notes = Vec::new();
    if let [Token::Word(cd), Token::Word(dir), Token::Op(and, _), rest @ ..] = items
        && cd.plain("cd")
        && dir.why.is_empty()
        && and == "&&"
        && !rest.is_empty()
    {
        cwd = Some(dir.text.clone());
        if !dir.text.starts_with('/') {
            notes.push(format!(
                "cd {}: cron went there from the crontab owner's home directory; the cwd is now relative to \
                 the project directory: check it",
                dir.text
            ));
        }
        items = rest;
    }
    let script = text[items.first().map_or(text.len(), Token::start)..]
        .trim()
        .to_string();
    let mut why = shell_reasons(items);
    if stdin.is_some() {
        why.push(
            "an unescaped % (cron sends the text after it to the command's standard input; kept as a \
             here-document)"
                .into(),
        );
    }
    let name = items
        .split(|t| matches!(t, Token::Op(op, _) if !is_redirect(op)))
        .find_map(name_of)
        .unwrap_or_else(|| "job".into());
    if why.is_empty() {
        let plain = plain_command(items)?;
        if plain.argv[0].contains('/') && !plain.argv[0].starts_with('/') && cwd.is_none() {
            notes.push(format!(
                "{} is relative: cron ran it from the crontab owner's home directory, it now runs from the \
                 project directory",
                plain.argv[0]
            ));
        }
        notes.extend(plain.notes);
        if comment.is_some() {
            notes.push("the # comment after the command is dropped (the schedule's description keeps it)".into());
        }
        return Ok(Found {
            cmd: plain.argv,
            cwd,
            env: plain.env,
            name,
            notes,
        });
    }
    let script = match stdin {
        Some(input) => here_document(&script, &input),
        None => script,
    };
    notes.insert(0, format!("needs a shell: {}", why.join(", ")));
    Ok(Found {
        cmd: vec![shell.to_string(), "-c".into(), script],
        cwd,
        env: BTreeMap::new(),
        name,
        notes,
    })
}

/// Cron's `%` handling: the command (with `\%` turned into `%`) and, after
/// the first unescaped `%`, its standard input (each further `%` a newline).
fn percent(command: &str) -> (String, Option<String>) {
    let mut text = String::new();
    let mut stdin: Option<String> = None;
    let mut chars = command.chars().peekable();
    while let Some(mut c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'%') {
            c = '%';
            chars.next();
        } else if c == '%' {
            match stdin.as_mut() {
                None => {
                    stdin = Some(String::new());
                    continue;
                }
                Some(_) => c = '\n',
            }
        }
        stdin.as_mut().unwrap_or(&mut text).push(c);
    }
    (text, stdin)
}

/// `SCRIPT`, fed `input` on its standard input as cron did.
fn here_document(script: &str, input: &str) -> String {
    let mut delimiter = "CRONTAB_STDIN".to_string();
    while input.lines().any(|l| l == delimiter) {
        delimiter.push('_');
    }
    format!("{{ {script}\n}} <<'{delimiter}'\n{input}\n{delimiter}\n")
}

#[derive(Debug, Clone, PartialEq)]
struct Word {
    /// The word after quote removal.
    text: String,
    start: usize,
    /// What in it only a shell can do ("$(…) command substitution").
    why: Vec<String>,
    /// Whether any part of it was quoted or escaped.
    quoted: bool,
}

impl Word {
    /// The bare, unquoted word `s` (a keyword or a builtin as written).
    fn plain(&self, s: &str) -> bool {
        self.text == s && !self.quoted && self.why.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(Word),
    /// `&&`, `||`, `|`, `;`, `&`, `(`, `)`, or a redirect (`>`, `2>>`,
    /// `2>&1`, `<`, `&>`...), with its start.
    Op(String, usize),
}

impl Token {
    fn start(&self) -> usize {
        match self {
            Token::Word(w) => w.start,
            Token::Op(_, at) => *at,
        }
    }
}

fn is_redirect(op: &str) -> bool {
    op.contains(['<', '>'])
}

/// Splits a command into words and operators as `sh` does. A `#` starting a
/// word starts a comment: the second part of the answer says where.
fn lex(text: &str) -> Result<(Vec<Token>, Option<usize>), String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut word: Option<Word> = None;
    let mut comment = None;
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let pos = |i: usize| chars.get(i).map_or(text.len(), |&(p, _)| p);
    while let Some(c) = at(i) {
        let w = word.get_or_insert_with(|| Word {
            text: String::new(),
            start: pos(i),
            why: vec![],
            quoted: false,
        });
        let fresh = w.text.is_empty() && !w.quoted && w.why.is_empty();
        match c {
            ' ' | '\t' => {
                if !fresh {
                    tokens.push(Token::Word(w.clone()));
                }
                word = None;
                i += 1;
            }
            '#' if fresh => {
                comment = Some(pos(i));
                word = None;
                break;
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' => {
                let mut start = pos(i);
                let mut op = String::new();
                // Digits right before `<` or `>` name the descriptor.
                let fd = !fresh && matches!(c, '<' | '>') && !w.quoted && w.text.chars().all(|d| d.is_ascii_digit());
                if fd {
                    op = w.text.clone();
                    start = w.start;
                } else if !fresh {
                    tokens.push(Token::Word(w.clone()));
                }
                word = None;
                let two: String = [Some(c), at(i + 1)].into_iter().flatten().collect();
                let taken = match two.as_str() {
                    "&&" | "||" | ";;" | ">>" | ">|" | "<<" | "<>" | "&>" => 2,
                    ">&" | "<&" => {
                        // `2>&1`: the descriptor it duplicates belongs to it.
                        let digits = chars[i + 2..]
                            .iter()
                            .take_while(|(_, d)| d.is_ascii_digit() || *d == '-')
                            .count();
                        2 + digits
                    }
                    _ => 1,
                };
                op.extend(chars[i..i + taken].iter().map(|&(_, c)| c));
                i += taken;
                if op.ends_with("&>") && at(i) == Some('>') {
                    op.push('>');
                    i += 1;
                }
                tokens.push(Token::Op(op, start));
            }
            '\'' => {
                w.quoted = true;
                let end = (i + 1..chars.len())
                    .find(|&j| chars[j].1 == '\'')
                    .ok_or("an unterminated ' quote")?;
                w.text.extend(chars[i + 1..end].iter().map(|&(_, c)| c));
                i = end + 1;
            }
            '"' => {
                w.quoted = true;
                i += 1;
                loop {
                    match at(i) {
                        None => return Err("an unterminated \" quote".into()),
                        Some('"') => break,
                        Some('\\') if matches!(at(i + 1), Some('$' | '`' | '"' | '\\')) => {
                            w.text.push(at(i + 1).unwrap_or_default());
                            i += 2;
                        }
                        Some('$' | '`') => i = expansion(&chars, i, w)?,
                        Some(c) => {
                            w.text.push(c);
                            i += 1;
                        }
                    }
                }
                i += 1;
            }
            '\\' => {
                w.quoted = true;
                if let Some(next) = at(i + 1) {
                    w.text.push(next);
                }
                i += 2;
            }
            '$' | '`' => i = expansion(&chars, i, w)?,
            '*' | '?' | '[' => {
                w.why.push(format!("globbing ({c})"));
                w.text.push(c);
                i += 1;
            }
            '~' if fresh => {
                w.why.push("~ (the crontab owner's home directory)".into());
                w.text.push(c);
                i += 1;
            }
            _ => {
                w.text.push(c);
                i += 1;
            }
        }
    }
    if let Some(w) = word
        && !(w.text.is_empty() && !w.quoted && w.why.is_empty())
    {
        tokens.push(Token::Word(w));
    }
    Ok((tokens, comment))
}

/// A `$` or a backtick at `i` inside word `w`: records what it needs and
/// returns the index after it (after the whole `$(…)` or `` `…` ``).
fn expansion(chars: &[(usize, char)], i: usize, w: &mut Word) -> Result<usize, String> {
    let at = |j: usize| chars.get(j).map(|&(_, c)| c);
    let raw = |from: usize, to: usize| {
        chars[from..to.min(chars.len())]
            .iter()
            .map(|&(_, c)| c)
            .collect::<String>()
    };
    if at(i) == Some('`') {
        let end = (i + 1..chars.len())
            .find(|&j| chars[j].1 == '`' && chars[j - 1].1 != '\\')
            .ok_or("an unterminated ` (backtick)")?;
        w.why.push("`…` command substitution".into());
        w.text.push_str(&raw(i, end + 1));
        return Ok(end + 1);
    }
    match at(i + 1) {
        Some('(') => {
            let arithmetic = at(i + 2) == Some('(');
            let mut depth = 0usize;
            let mut j = i + 1;
            let mut quote: Option<char> = None;
            loop {
                let Some(c) = at(j) else {
                    return Err("an unterminated $( (command substitution)".into());
                };
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, '\'' | '"') => quote = Some(c),
                    (None, '\\') => j += 1,
                    (None, '(') => depth += 1,
                    (None, ')') => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            w.why.push(
                if arithmetic {
                    "$((…)) arithmetic"
                } else {
                    "$(…) command substitution"
                }
                .into(),
            );
            w.text.push_str(&raw(i, j + 1));
            Ok(j + 1)
        }
        Some('{') => {
            let end = (i + 2..chars.len())
                .find(|&j| chars[j].1 == '}')
                .ok_or("an unterminated ${")?;
            let name = raw(i, end + 1);
            w.why.push(format!("a variable ({name})"));
            w.text.push_str(&name);
            Ok(end + 1)
        }
        Some(c) if c.is_ascii_alphanumeric() || c == '_' || "@*#?$!-".contains(c) => {
            let mut end = i + 2;
            if c.is_ascii_alphabetic() || c == '_' {
                while at(end).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    end += 1;
                }
            }
            let name = raw(i, end);
            w.why.push(format!("a variable ({name})"));
            w.text.push_str(&name);
            Ok(end)
        }
        // A `$` before anything else is a plain dollar sign to the shell.
        _ => {
            w.text.push('$');
            Ok(i + 1)
        }
    }
}

const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "while", "until", "do", "done", "{", "}", "!", "[[",
    "function", "select", "time",
];

/// Builtins with no program of the same name on a usual system.
const BUILTINS: &[&str] = &[
    "cd", ".", "source", "export", "unset", "set", "eval", "exec", "alias", "ulimit", "umask", "trap", "read", "shift",
    "wait", "exit", "return", "readonly", "local", "declare", "typeset", ":",
];

/// Why the command (after a leading `cd DIR &&`) needs a shell, in the
/// order a reader meets them; empty for a plain command.
fn shell_reasons(items: &[Token]) -> Vec<String> {
    let mut why: Vec<String> = Vec::new();
    let ops: Vec<&str> = items
        .iter()
        .filter_map(|t| match t {
            Token::Op(op, _) if !is_redirect(op) => Some(op.as_str()),
            _ => None,
        })
        .collect();
    if !ops.is_empty() && ops.iter().all(|op| *op == "&&") {
        let n = ops.len() + 1;
        why.push(format!(
            "an && chain of {n} commands (it could become a {n}-step sequence)"
        ));
    } else {
        for op in &ops {
            why.push(
                match *op {
                    "|" => "a pipe (|)",
                    "||" => "|| (run on failure)",
                    "&&" => "an && chain",
                    ";" | ";;" => "a ; list of commands",
                    "&" => "& (runs in the background)",
                    _ => "a ( ) subshell",
                }
                .into(),
            );
        }
    }
    if let Some(Token::Word(program)) = items
        .iter()
        .find(|t| !matches!(t, Token::Word(w) if assignment(w).is_some()))
        && !program.quoted
    {
        if KEYWORDS.contains(&program.text.as_str()) {
            why.push(format!("the shell keyword {}", program.text));
        } else if BUILTINS.contains(&program.text.as_str()) {
            why.push(format!("the shell builtin {}", program.text));
        }
    }
    for (k, item) in items.iter().enumerate() {
        match item {
            Token::Word(w) => why.extend(w.why.iter().cloned()),
            Token::Op(op, _) if op.contains('<') => why.push(
                if op.contains("<<") {
                    "a here-document (<<)"
                } else {
                    "an input redirect (<)"
                }
                .into(),
            ),
            Token::Op(op, _) if is_redirect(op) && ops.is_empty() && !trailing_log(&items[k..]) => {
                why.push("a redirect that is not a trailing log redirect".into());
            }
            _ => {}
        }
    }
    let mut seen = Vec::new();
    why.retain(|w| {
        let new = !seen.contains(w);
        seen.push(w.clone());
        new
    });
    why
}

/// Whether `items`, starting at a redirect, are only output redirects to
/// plain files (or descriptor copies like `2>&1`) up to the end.
fn trailing_log(items: &[Token]) -> bool {
    let mut k = 0;
    while k < items.len() {
        let Token::Op(op, _) = &items[k] else { return false };
        let fd = op.trim_start_matches(|c: char| c.is_ascii_digit());
        let to_file =
            matches!(fd, ">" | ">>" | ">|" | "&>" | "&>>") && matches!(&op[..op.len() - fd.len()], "" | "1" | "2");
        let copy = matches!(op.as_str(), "2>&1" | ">&2" | "1>&2");
        if copy {
            k += 1;
        } else if to_file && matches!(items.get(k + 1), Some(Token::Word(w)) if w.why.is_empty()) {
            k += 2;
        } else {
            return false;
        }
    }
    true
}

/// `NAME=value` as a shell assignment word (the name unquoted).
fn assignment(w: &Word) -> Option<(String, String)> {
    let (name, value) = w.text.split_once('=')?;
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then(|| (name.to_string(), value.to_string()))
}

struct Plain {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    notes: Vec<String>,
}

/// A command with nothing only a shell can do: its argv, the assignments
/// before it, and the trailing log redirect it loses.
fn plain_command(items: &[Token]) -> Result<Plain, String> {
    let mut env = BTreeMap::new();
    let mut argv = Vec::new();
    let mut targets: Vec<(String, bool)> = Vec::new();
    let mut k = 0;
    while k < items.len() {
        match &items[k] {
            Token::Word(w) => {
                match assignment(w) {
                    Some((name, value)) if argv.is_empty() => {
                        env.insert(name, value);
                    }
                    _ => argv.push(w.text.clone()),
                }
                k += 1;
            }
            Token::Op(op, _) => {
                let copy = op.contains(">&") && !op.starts_with('&');
                if !copy {
                    let Some(Token::Word(target)) = items.get(k + 1) else {
                        return Err(format!("the redirect {op} names no file"));
                    };
                    targets.push((target.text.clone(), op.ends_with(">>")));
                    k += 1;
                }
                k += 1;
            }
        }
    }
    if argv.is_empty() {
        return Err("the command has only assignments and redirects, no program".into());
    }
    let mut notes = Vec::new();
    if !env.is_empty() {
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        notes.push(format!("{} (set before the command) go into its env", names.join(", ")));
    }
    let logs: Vec<&(String, bool)> = targets.iter().filter(|(t, _)| t != "/dev/null").collect();
    if !items.iter().any(|t| matches!(t, Token::Op(..))) {
        // Nothing redirected: cron mailed the output.
    } else if logs.is_empty() {
        notes.push(
            "its output, which cron discarded (or mailed), is now recorded by the scheduler (`scheduler show RUN`)"
                .into(),
        );
    } else {
        let files: Vec<String> = logs
            .iter()
            .map(|(t, append)| format!("{} {t}", if *append { "appended to" } else { "written to" }))
            .collect();
        notes.push(format!(
            "its output is now recorded by the scheduler (`scheduler show RUN`) instead of {}",
            files.join(" and ")
        ));
    }
    Ok(Plain { argv, env, notes })
}

/// Programs that run the script named by their first argument.
fn interpreter(program: &str) -> bool {
    let bare = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    [
        "python", "pypy", "sh", "bash", "dash", "zsh", "ksh", "perl", "ruby", "node", "nodejs", "php", "Rscript",
        "env", "nice", "nohup", "uv", "deno", "bun",
    ]
    .contains(&bare)
}

/// A simple command's name for its job: its program's (or, for an
/// interpreter, its script's) file name without its extension, as a valid
/// name; none for a shell keyword or builtin.
fn name_of(items: &[Token]) -> Option<String> {
    let words: Vec<&Word> = items
        .iter()
        .map_while(|t| match t {
            Token::Word(w) => Some(w),
            _ => None,
        })
        .filter(|w| assignment(w).is_none())
        .collect();
    let mut pick = None;
    let mut k = 0;
    while let Some(w) = words.get(k) {
        let file = w.text.rsplit('/').next().unwrap_or_default();
        if k == 0 && (KEYWORDS.contains(&w.text.as_str()) || BUILTINS.contains(&w.text.as_str())) {
            return None;
        }
        pick = Some(file);
        if !interpreter(file) {
            break;
        }
        // The script: the first argument that is not an option (`-m pkg.mod`
        // names a module: its last part).
        k += 1;
        while let Some(arg) = words.get(k) {
            match arg.text.as_str() {
                "-m" => return words.get(k + 1).and_then(|m| m.text.rsplit('.').next()).map(sanitize),
                "-c" | "-e" => return Some(sanitize(file)),
                _ => {}
            }
            if !arg.text.starts_with('-') && !arg.text.contains('=') {
                break;
            }
            k += 1;
        }
    }
    let file = pick?;
    let stem = match file.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => file,
    };
    Some(sanitize(stem))
}

/// A name every definition file accepts: letters, digits, `_` and `-`, not
/// starting with `-` (it would read as an option), at most 64 characters.
fn sanitize(raw: &str) -> String {
    let name: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect::<String>()
        .trim_start_matches(['-', '_'])
        .trim_end_matches('_')
        .chars()
        .take(64)
        .collect();
    if name.is_empty() { "job".into() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(command: &str) -> Found {
        command_of(command, "sh").unwrap()
    }

    /// What the report says about `command`.
    fn said(command: &str) -> String {
        found(command).notes.join("; ")
    }

    #[test]
    fn words_are_split_with_sh_quoting() {
        let job = found(r#"./run 'a b' "c \"d\" \$x" e\ f '' "" it\'s"#);
        assert_eq!(job.cmd, ["./run", "a b", "c \"d\" $x", "e f", "", "", "it's"]);
        assert_eq!(found("date +\\%F").cmd, ["date", "+%F"]);
        assert_eq!(found("./a # nightly").cmd, ["./a"]);
        assert!(said("./a # nightly").contains("the # comment after the command is dropped"));
    }

    #[test]
    fn an_unescaped_percent_feeds_the_rest_as_standard_input() {
        let job = found("mail -s report root%Hello,%see \\% below");
        assert_eq!(
            job.cmd[2],
            "{ mail -s report root\n} <<'CRONTAB_STDIN'\nHello,\nsee % below\nCRONTAB_STDIN\n"
        );
        assert!(said("cat%x").contains("needs a shell: an unescaped % (cron sends"));
    }

    #[test]
    fn trailing_log_redirects_are_dropped_and_reported() {
        for (line, tail) in [
            ("./a >> a.log 2>&1", "instead of appended to a.log"),
            ("./a > a.log", "instead of written to a.log"),
            (
                "./a >a.log 2>>err.log",
                "instead of written to a.log and appended to err.log",
            ),
            ("./a >/dev/null 2>&1", "which cron discarded (or mailed)"),
            ("./a 2>&1", "which cron discarded (or mailed)"),
            ("./a &>> a.log", "instead of appended to a.log"),
        ] {
            assert_eq!(found(line).cmd, ["./a"], "{line}");
            assert!(said(line).contains(tail), "{line}: {}", said(line));
        }
    }

    #[test]
    fn lines_that_need_a_shell_say_why() {
        for (line, why) in [
            ("./a | gzip > a.gz", "a pipe (|)"),
            ("./a; ./b", "a ; list of commands"),
            ("./a || ./alert", "|| (run on failure)"),
            ("rm /tmp/*.csv", "globbing (*)"),
            ("./a ~/x", "~ (the crontab owner's home directory)"),
            ("./a $HOME/x", "a variable ($HOME)"),
            ("./a \"${DIR}\"", "a variable (${DIR})"),
            ("./a `date`", "`…` command substitution"),
            ("./a < in.txt", "an input redirect (<)"),
            ("./a > out.txt --flag", "a redirect that is not a trailing log redirect"),
            ("./a > $(date +\\%F).log", "$(…) command substitution"),
            ("./a &", "& (runs in the background)"),
            (
                "test -f x && ./a",
                "an && chain of 2 commands (it could become a 2-step sequence)",
            ),
            ("export A=1", "the shell builtin export"),
            ("if true; then ./a; fi", "the shell keyword if"),
        ] {
            let job = found(line);
            assert_eq!(job.cmd[..2], ["sh", "-c"], "{line}");
            let said = said(line);
            assert!(
                said.contains(&format!("needs a shell: {why}")) || said.contains(&format!(", {why}")),
                "{line}: {said}"
            );
        }
    }

    #[test]
    fn a_leading_cd_becomes_the_cwd_even_for_a_shell_line() {
        let job = found("cd /srv/x && ./a | ./b");
        assert_eq!(job.cwd.as_deref(), Some("/srv/x"));
        assert_eq!(job.cmd, ["sh", "-c", "./a | ./b"]);
        assert_eq!(job.name, "a");
        let relative = found("cd app && ./run.sh");
        assert_eq!((relative.cwd.as_deref(), relative.name.as_str()), (Some("app"), "run"));
        assert!(said("cd app && ./run.sh").contains("the cwd is now relative to the project directory"));
        // Not a leading cd: the shell does it.
        let job = found("cd /srv/x; ./go.sh");
        assert_eq!((job.cwd.as_ref(), job.name.as_str()), (None, "go"));
    }
}
