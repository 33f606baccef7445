//! Where a namespace's data lives on a Redis (or Valkey) server, and the scripts that
//! change it: [`Layout`] and [`SCRIPTS`].
//!
//! Every name the host uses starts `sandsock:{NAMESPACE}:` and then a fixed tag:
//!
//! - `v:BUCKET:KEY`: a value (a string);
//! - `i:BUCKET`: the bucket's keys, a sorted set with every score 0, so that
//!   `list-keys` reads them in byte order after a cursor (`ZRANGEBYLEX`) as the other
//!   backends do;
//! - `bytes`: what the namespace holds (keys and values, counted as the other backends
//!   count them), against `--store-max-bytes`;
//! - `t:TOPIC`: a topic's pub/sub channel.
//!
//! A namespace has no `{` or `}` and a bucket or topic name no `:`, so no two names
//! meet, and the braces make the namespace the cluster hash tag: all of one
//! namespace's data is in one slot, which a script touching several keys needs. No
//! command the host sends takes a pattern (no `KEYS`, `SCAN MATCH` or `PSUBSCRIBE`):
//! listing reads the index, subscriptions name exact channels. So no character of a
//! namespace, bucket or key (`*`, `?`, `[`) can reach one.
//!
//! Every write is a Lua script, so that the value, the index and the byte count change
//! together (Redis runs a script alone) and the byte limit is checked against the
//! server's count, whichever host writes.

use super::Namespace;

/// The names of one namespace's data.
#[derive(Clone, Debug)]
pub struct Layout {
    /// `sandsock:{NAMESPACE}:`.
    prefix: String,
}

impl Layout {
    /// `namespace`'s names.
    pub fn new(namespace: &Namespace) -> Self {
        Self {
            prefix: format!("sandsock:{{{namespace}}}:"),
        }
    }

    /// The value at `key` in `bucket`.
    pub fn value(&self, bucket: &str, key: &str) -> String {
        format!("{}v:{bucket}:{key}", self.prefix)
    }

    /// The sorted set of `bucket`'s keys.
    pub fn index(&self, bucket: &str) -> String {
        format!("{}i:{bucket}", self.prefix)
    }

    /// The namespace's byte count.
    pub fn usage(&self) -> String {
        format!("{}bytes", self.prefix)
    }

    /// `topic`'s channel.
    pub fn channel(&self, topic: &str) -> String {
        format!("{}t:{topic}", self.prefix)
    }

    /// The topic a channel of this namespace carries.
    pub fn topic_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.prefix)?.strip_prefix("t:")
    }
}

/// What a script answers first: how the operation went.
pub mod status {
    /// Done (`set`, a `delete` of a key that was there, a swap).
    pub const DONE: i64 = 1;
    /// Not done, and not an error: a `delete` of a missing key, a swap that found
    /// another value.
    pub const NOT: i64 = 0;
    /// The namespace would hold more than its limit; nothing changed.
    pub const FULL: i64 = -1;
    /// `increment` of something that is not a decimal integer, or past `i64`.
    pub const NOT_A_NUMBER: i64 = -2;
}

/// One script: its name for logs and its source.
#[derive(Clone, Copy, Debug)]
pub struct Script {
    /// What it does, for logs.
    pub name: &'static str,
    /// Lua, as Redis runs it.
    pub source: &'static str,
}

/// Sets keys of one bucket, all or none. KEYS: the byte count, the index, then each
/// key's value; ARGV: the limit, the bucket name's length, then each key's name and
/// value. Answers `{status, bytes now}`.
pub const PUT: Script = Script {
    name: "put",
    source: r#"
local limit, bucket = tonumber(ARGV[1]), tonumber(ARGV[2])
local delta = 0
for i = 3, #KEYS do
  local name, value = ARGV[2 * i - 3], ARGV[2 * i - 2]
  if redis.call('EXISTS', KEYS[i]) == 1 then
    delta = delta - (bucket + #name + redis.call('STRLEN', KEYS[i]))
  end
  delta = delta + bucket + #name + #value
end
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + delta > limit then return {-1, used} end
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 2])
  redis.call('ZADD', KEYS[2], 0, ARGV[2 * i - 3])
end
return {1, redis.call('INCRBY', KEYS[1], delta)}
"#,
};

/// Removes keys of one bucket. KEYS: the byte count, the index, then each key's
/// value; ARGV: the bucket name's length, then each key's name. Answers `{how many
/// were there, bytes now}`.
pub const REMOVE: Script = Script {
    name: "remove",
    source: r#"
local bucket = tonumber(ARGV[1])
local freed, removed = 0, 0
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    freed = freed + bucket + #ARGV[i - 1] + redis.call('STRLEN', KEYS[i])
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[2], ARGV[i - 1])
    removed = removed + 1
  end
end
if removed == 0 then return {0, tonumber(redis.call('GET', KEYS[1]) or '0')} end
return {removed, redis.call('DECRBY', KEYS[1], freed)}
"#,
};

/// Adds to a decimal number (a missing key holds 0). KEYS: the byte count, the index,
/// the value; ARGV: the limit, the bucket name's length, the key's name, the delta.
/// Answers `{status, bytes now, the number in decimal}`: Redis's own INCRBY does the
/// arithmetic (a Lua number is a double, which would round past 2^53). Its errors
/// other than "not a number" and "overflow" (out of memory, a read-only replica) are
/// the script's own: the operation fails, it is not told its value is no number.
pub const INCREMENT: Script = Script {
    name: "increment",
    source: r#"
local limit, bucket, name = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local old = redis.call('GET', KEYS[3])
local done = redis.pcall('INCRBY', KEYS[3], ARGV[4])
if type(done) == 'table' and done.err then
  if string.find(done.err, 'not an integer') or string.find(done.err, 'overflow') then
    return {-2, used}
  end
  return done
end
local now = redis.call('GET', KEYS[3])
local delta = bucket + #name + #now
if old then delta = delta - (bucket + #name + #old) end
if used + delta > limit then
  if old then redis.call('SET', KEYS[3], old) else redis.call('DEL', KEYS[3]) end
  return {-1, used}
end
if not old then redis.call('ZADD', KEYS[2], 0, name) end
return {1, redis.call('INCRBY', KEYS[1], delta), now}
"#,
};

/// Sets a key if it holds the expected value (or is missing, if none is expected).
/// KEYS: the byte count, the index, the value; ARGV: the limit, the bucket name's
/// length, the key's name, the new value, `1` or `0` (whether a value is expected),
/// the expected value. Answers `{status, bytes now}`.
pub const COMPARE_AND_SWAP: Script = Script {
    name: "compare-and-swap",
    source: r#"
local limit, bucket, name, new = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = redis.call('GET', KEYS[3])
if ARGV[5] == '1' then
  if now ~= ARGV[6] then return {0, used} end
elseif now then
  return {0, used}
end
local delta = bucket + #name + #new
if now then delta = delta - (bucket + #name + #now) end
if used + delta > limit then return {-1, used} end
redis.call('SET', KEYS[3], new)
if not now then redis.call('ZADD', KEYS[2], 0, name) end
return {1, redis.call('INCRBY', KEYS[1], delta)}
"#,
};

/// Every script, in the order their hashes are kept.
pub const SCRIPTS: [Script; 4] = [PUT, REMOVE, INCREMENT, COMPARE_AND_SWAP];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_apart_and_topics_come_back() {
        let layout = Layout::new(&Namespace::new("a*").unwrap());
        assert_eq!(layout.value("b", "k:1"), "sandsock:{a*}:v:b:k:1");
        assert_eq!(layout.index("b"), "sandsock:{a*}:i:b");
        assert_eq!(layout.usage(), "sandsock:{a*}:bytes");
        assert_eq!(layout.channel("room"), "sandsock:{a*}:t:room");
        assert_eq!(layout.topic_of("sandsock:{a*}:t:room"), Some("room"));
        assert_eq!(layout.topic_of("sandsock:{ab}:t:room"), None);
        assert_eq!(layout.topic_of("sandsock:{a*}:v:room"), None);
    }
}
