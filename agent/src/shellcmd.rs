//! Which task commands the shell only has to start.
//!
//! Marathon runs a task's `cmd` as `/bin/sh -c <cmd>`. Where `cmd` is one simple command, bash
//! `exec`s the program in its own place, but dash, Debian's `/bin/sh`, does not: it forks the
//! program and waits for it, so a task is a shell with the program under it. For a `cmd` of
//! [`plain_words`] the agent has the shell it starts anyway (`process::spawn`) `exec` the
//! program itself, `exec "$0" "$@"` with the words as arguments: the same shell finds the program
//! on the same `PATH`, with the same argument vector, working directory and environment; only
//! the second shell is gone. A plain command thus runs as under a shell that `exec`s a lone simple
//! command. What differs from dash, which stays the parent:
//!
//! * the task's pid, and so its process group, is the program's;
//! * a program killed by a signal is reported as terminated by that signal, where dash would
//!   exit with status 128 + n (the status' `exit_code` is 128 + n either way);
//! * on a kill the program itself receives SIGTERM and has the kill grace period (Marathon's
//!   `taskKillGracePeriodSeconds`) before SIGKILL; under dash the shell died of the SIGTERM at
//!   once and the agent SIGKILLed the rest of the process group with it.
//!
//! [`plain_words`] is deliberately narrow: whatever it refuses runs under `/bin/sh -c` as
//! before. So does a plain command whose program the agent does not find on the task's `PATH`,
//! so that the shell reports it as it always did (`not found`, status 127).

/// Characters of a plain word: none the shell treats specially anywhere in a word. Not `~`
/// (tilde expansion), `#` (comments), `[`, `*`, `?` (globs), `{`, `}`, `!` (reserved words),
/// `$`, `` ` ``, quotes, backslashes, operators, nor any non-ASCII character.
const SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-./,:+@%";

/// Keywords and builtins of dash, and of bash for good measure: a first word among these is run
/// by the shell itself (and `echo`, `kill`, `printf`, `test` then differ from the programs of the
/// same name), not looked up on `PATH`.
const SHELL_WORDS: &[&str] = &[
    "!",
    ".",
    ":",
    "[",
    "[[",
    "]]",
    "{",
    "}",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "case",
    "cd",
    "chdir",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "coproc",
    "declare",
    "dirs",
    "disown",
    "do",
    "done",
    "echo",
    "elif",
    "else",
    "enable",
    "esac",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "fi",
    "for",
    "function",
    "getopts",
    "hash",
    "help",
    "history",
    "if",
    "in",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "select",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "then",
    "time",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "until",
    "unset",
    "wait",
    "while",
];

/// The words of `cmd` when the shell would take it as nothing but those words, the first naming
/// a program to look up on `PATH` (or a path): words of [`SAFE`] characters separated by spaces
/// and tabs, the first no shell keyword or builtin and not starting with `-` (which `exec` may
/// take for an option). Later words may also hold `=`, which makes an assignment only in front
/// of the command name. `None` for anything else, an empty command included.
pub(crate) fn plain_words(cmd: &str) -> Option<Vec<&str>> {
    let words: Vec<&str> = cmd.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    let (first, rest) = words.split_first()?;
    let safe = |w: &str, extra: &[u8]| w.bytes().all(|b| SAFE.contains(&b) || extra.contains(&b));
    let plain = safe(first, b"")
        && !first.starts_with('-')
        && !SHELL_WORDS.contains(first)
        && rest.iter().all(|w| safe(w, b"="));
    plain.then_some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_are_split_on_spaces_and_tabs() {
        assert_eq!(plain_words("sleep 1000"), Some(vec!["sleep", "1000"]));
        assert_eq!(
            plain_words("\t/opt/app/bin/server --port  8080\ta,b:c+d@e%f_g.h "),
            Some(vec![
                "/opt/app/bin/server",
                "--port",
                "8080",
                "a,b:c+d@e%f_g.h"
            ])
        );
        assert_eq!(plain_words("./run"), Some(vec!["./run"]));
        assert_eq!(plain_words("bin/run -v"), Some(vec!["bin/run", "-v"]));
        assert_eq!(
            plain_words("java -Xmx1g -Dport=8080 --name=web -jar app.jar"),
            Some(vec![
                "java",
                "-Xmx1g",
                "-Dport=8080",
                "--name=web",
                "-jar",
                "app.jar"
            ]),
            "an `=` after the command name is an ordinary character"
        );
    }

    #[test]
    fn empty_commands_are_not_plain() {
        assert_eq!(plain_words(""), None);
        assert_eq!(plain_words(" \t "), None);
    }

    #[test]
    fn anything_the_shell_interprets_is_refused() {
        for cmd in [
            "sleep 1000 &",
            "sleep 1000; echo done",
            "sleep 1000 && true",
            "sleep 1000 || true",
            "sleep 1000 | cat",
            "sleep 1000 > out",
            "sleep 1000 < in",
            "sleep 1000 2>&1",
            "sleep $SECONDS",
            "sleep ${SECONDS}",
            "sleep $1",
            "sleep `date`",
            "sleep $(date)",
            "sleep '1000'",
            "sleep \"1000\"",
            "sleep \\1000",
            "sleep 1000 # comment",
            "sleep 1000#",
            "sleep ~",
            "sleep ~/x",
            "ls a=~/x",
            "ls *.log",
            "ls file?",
            "ls [ab]",
            "ls {a,b}",
            "FOO=bar sleep 1000",
            "=sleep 1000",
            "sleep 1000\nsleep 2",
            "sleep 1000\r",
            "sleep\u{a0}1000",
            "sleep\u{b}1000",
            "sléep 1000",
            "(sleep 1000)",
            "sleep (1000)",
            "sleep 1000 !",
            "sleep ^1000",
            "-sleep 1000",
        ] {
            assert_eq!(plain_words(cmd), None, "{cmd:?}");
        }
    }

    #[test]
    fn shell_keywords_and_builtins_are_refused_as_the_first_word_only() {
        for cmd in [
            "echo hi",
            "kill 1",
            "test -f x",
            "[ -f x ]",
            "true",
            "false",
            "printf x",
            "pwd",
            "exec sleep 1",
            "exit 3",
            "cd /",
            "read x",
            "ulimit -n",
            "umask 022",
            "wait",
            "trap x INT",
            "times",
            "type sleep",
            "command sleep 1",
            "eval sleep",
            "export A",
            "set -e",
            "if",
            "while",
            "for",
            "case",
            "until",
            "time sleep 1",
            "source x",
            ". x",
            ": x",
        ] {
            assert_eq!(plain_words(cmd), None, "{cmd:?}");
        }
        assert_eq!(plain_words("/bin/echo hi"), Some(vec!["/bin/echo", "hi"]));
        assert_eq!(
            plain_words("nice echo hi"),
            Some(vec!["nice", "echo", "hi"])
        );
        assert_eq!(plain_words("./test"), Some(vec!["./test"]));
    }
}
