//! One operation as one Redis command, and its reply as the operation's outcome:
//! what [`RedisStore`](super::RedisStore) puts in a pipeline and reads back.
//! Reads are plain commands; every write is one of [`SCRIPTS`].

use ::redis::{ErrorKind, Pipeline, RedisError, Value};

use super::memory::LIST_PAGE;
use super::redis_layout::{Layout, SCRIPTS, status};
use super::{Job, Namespace, Op, Outcome, StoreError, StoreLimits, last_of_each};

/// The scripts' hashes and the namespace's byte count, from the replies to
/// `connect`'s pipeline.
pub fn loaded(replies: Vec<Value>) -> Result<([String; SCRIPTS.len()], Option<u64>), RedisError> {
    let unexpected = |what: &Value| {
        RedisError::from((
            ErrorKind::Client,
            "unexpected reply while loading the scripts",
            format!("{what:?}"),
        ))
    };
    let mut replies = replies.into_iter();
    let mut hashes: [String; SCRIPTS.len()] = Default::default();
    for hash in &mut hashes {
        match replies.next() {
            Some(Value::BulkString(bytes)) => *hash = String::from_utf8_lossy(&bytes).into(),
            Some(Value::SimpleString(text)) => *hash = text,
            Some(Value::ServerError(e)) => return Err(e.into()),
            other => return Err(unexpected(&other.unwrap_or(Value::Nil))),
        }
    }
    let bytes = match replies.next() {
        Some(Value::BulkString(bytes)) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .map(|n| n.max(0) as u64),
        Some(Value::ServerError(e)) => return Err(e.into()),
        _ => None,
    };
    Ok((hashes, bytes))
}

/// Adds `job`'s one command to `pipe`, with `scripts` the hashes of [`SCRIPTS`] and
/// `layout` the names of `namespace` (a job of another namespace gets its own).
pub fn command(
    pipe: &mut Pipeline,
    job: &Job,
    scripts: &[String; SCRIPTS.len()],
    limits: &StoreLimits,
    namespace: &Namespace,
    layout: &Layout,
) {
    let other;
    let layout = if job.namespace == *namespace {
        layout
    } else {
        other = Layout::new(&job.namespace);
        &other
    };
    let [put, remove, increment, compare_and_swap] = scripts;
    let limit = limits.max_namespace_bytes;
    match &job.op {
        Op::Get(k) => {
            pipe.cmd("GET").arg(layout.value(&k.bucket, &k.key));
        }
        Op::Exists(k) => {
            pipe.cmd("EXISTS").arg(layout.value(&k.bucket, &k.key));
        }
        Op::Set(k, value) => {
            script(pipe, put, layout, &k.bucket, [&k.key])
                .arg(limit)
                .arg(k.bucket.len())
                .arg(&k.key)
                .arg(value);
        }
        Op::SetMany(bucket, entries) => {
            let entries = last_of_each(entries);
            let command = script(pipe, put, layout, bucket, entries.iter().map(|(k, _)| *k));
            command.arg(limit).arg(bucket.len());
            for (key, value) in entries {
                command.arg(key).arg(value);
            }
        }
        Op::Delete(k) => {
            script(pipe, remove, layout, &k.bucket, [&k.key])
                .arg(k.bucket.len())
                .arg(&k.key);
        }
        Op::DeleteMany(bucket, keys) => {
            script(pipe, remove, layout, bucket, keys)
                .arg(bucket.len())
                .arg(keys);
        }
        Op::Increment(k, delta) => {
            script(pipe, increment, layout, &k.bucket, [&k.key])
                .arg(limit)
                .arg(k.bucket.len())
                .arg(&k.key)
                .arg(*delta);
        }
        Op::CompareAndSwap(k, expected, new) => {
            script(pipe, compare_and_swap, layout, &k.bucket, [&k.key])
                .arg(limit)
                .arg(k.bucket.len())
                .arg(&k.key)
                .arg(new)
                .arg(if expected.is_some() { "1" } else { "0" })
                .arg(expected.as_deref().unwrap_or_default());
        }
        Op::ListKeys(bucket, cursor) => {
            let from = match cursor {
                Some(cursor) => format!("({cursor}"),
                None => "-".to_string(),
            };
            pipe.cmd("ZRANGEBYLEX")
                .arg(layout.index(bucket))
                .arg(from)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(LIST_PAGE + 1);
        }
        Op::GetMany(bucket, keys) => {
            let command = pipe.cmd("MGET");
            for key in keys {
                command.arg(layout.value(bucket, key));
            }
        }
    }
}

/// Adds a call of the script `hash` on `keys` of `bucket` to `pipe`: its KEYS are
/// the namespace's byte count, the bucket's index and each key's value, as every
/// script of [`SCRIPTS`] takes them. Answers the pipeline, whose `arg` adds to
/// this command: its ARGV.
fn script<'p, 'a>(
    pipe: &'p mut Pipeline,
    hash: &str,
    layout: &Layout,
    bucket: &str,
    keys: impl IntoIterator<Item = &'a String> + Clone,
) -> &'p mut Pipeline {
    let count = keys.clone().into_iter().count();
    let command = pipe
        .cmd("EVALSHA")
        .arg(hash)
        .arg(2 + count)
        .arg(layout.usage())
        .arg(layout.index(bucket));
    for key in keys {
        command.arg(layout.value(bucket, key));
    }
    command
}

/// How `op` ended, from its reply, and the namespace's bytes if a script counted
/// them; an error says what the reply was.
pub fn outcome_of(op: &Op, reply: Value) -> Result<(Outcome, Option<u64>), String> {
    use Value::{Array, BulkString, Int, Nil, ServerError};
    let outcome = match (op, reply) {
        (_, ServerError(e)) => return Err(e.to_string()),
        (Op::Get(_), Nil) => (Outcome::NotFound, None),
        (Op::Get(_), BulkString(value)) => (Outcome::Value(value), None),
        (Op::Exists(_), Int(n)) => (Outcome::Exists(n > 0), None),
        (Op::ListKeys(..), Array(items)) => {
            let mut keys = items
                .into_iter()
                .map(|item| match item {
                    BulkString(key) => String::from_utf8(key).map_err(|e| e.to_string()),
                    other => Err(format!("a key listed as {other:?}")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let more = keys.len() > LIST_PAGE;
            keys.truncate(LIST_PAGE);
            (Outcome::Keys(keys, more), None)
        }
        (Op::GetMany(..), Array(items)) => {
            let values = items
                .into_iter()
                .map(|item| match item {
                    Nil => Ok(None),
                    BulkString(value) => Ok(Some(value)),
                    other => Err(format!("a value read as {other:?}")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (Outcome::Values(values), None)
        }
        (_, Array(items)) if op.writes() => {
            // A script's answer: `{status, bytes now, ...}`.
            let (st, bytes) = match items.as_slice() {
                [Int(st), Int(bytes), ..] => (*st, (*bytes).max(0) as u64),
                _ => return Err(format!("{} answered {items:?}", op.name())),
            };
            (script_outcome(op, st, items.get(2))?, Some(bytes))
        }
        (_, other) => return Err(format!("{} answered {other:?}", op.name())),
    };
    Ok(outcome)
}

/// What a write's script answered with status `st` (and, for an increment, the
/// number in decimal) means.
fn script_outcome(op: &Op, st: i64, number: Option<&Value>) -> Result<Outcome, String> {
    Ok(match (st, op) {
        (status::FULL, _) => Outcome::Failed(StoreError::NamespaceFull),
        (status::NOT_A_NUMBER, _) => Outcome::Failed(StoreError::NotANumber),
        (_, Op::Increment(..)) => match number {
            Some(Value::BulkString(text)) => std::str::from_utf8(text)
                .ok()
                .and_then(|text| text.parse().ok())
                .map(Outcome::Counter)
                .ok_or_else(|| format!("a counter read as {text:?}"))?,
            other => return Err(format!("an increment answered {other:?}")),
        },
        (_, Op::CompareAndSwap(..)) => Outcome::Swapped(st == status::DONE),
        (status::NOT, Op::Delete(_)) => Outcome::NotFound,
        _ => Outcome::Done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_outcomes() {
        let key = super::super::Key::new("b", "k");
        let script = |status, bytes| Value::Array(vec![Value::Int(status), Value::Int(bytes)]);
        let set = Op::Set(key.clone(), b"v".to_vec());
        assert_eq!(outcome_of(&set, script(1, 3)), Ok((Outcome::Done, Some(3))));
        assert_eq!(
            outcome_of(&set, script(-1, 9)),
            Ok((Outcome::Failed(StoreError::NamespaceFull), Some(9)))
        );
        let incr = Op::Increment(key.clone(), 1);
        let counted = Value::Array(vec![
            Value::Int(1),
            Value::Int(4),
            Value::BulkString(b"9007199254740993".to_vec()),
        ]);
        assert_eq!(
            outcome_of(&incr, counted),
            Ok((Outcome::Counter(9_007_199_254_740_993), Some(4))),
            "past 2^53: exact"
        );
        let list = Op::ListKeys("b".into(), None);
        let page: Vec<Value> = (0..=LIST_PAGE)
            .map(|i| Value::BulkString(format!("k{i}").into_bytes()))
            .collect();
        let Ok((Outcome::Keys(keys, more), None)) = outcome_of(&list, Value::Array(page)) else {
            panic!("not a page");
        };
        assert_eq!((keys.len(), more), (LIST_PAGE, true));
        assert_eq!(
            outcome_of(&Op::Get(key), Value::Nil),
            Ok((Outcome::NotFound, None))
        );
        assert!(outcome_of(&incr, Value::Okay).is_err());
    }
}
