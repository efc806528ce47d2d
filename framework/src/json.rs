//! How the stats look as JSON (`status --json`, `/status.json`, the control
//! channel): durations as numbers of seconds in fields named `*_seconds`
//! (serde's default for a `Duration` is `{secs, nanos}`), and name/value
//! lists as objects.

/// A `Duration` as a number of seconds.
pub(crate) mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// `Option<(p50, p90, p99)>` as `{"p50": s, "p90": s, "p99": s}` (seconds)
/// or `null`.
pub(crate) mod percentiles {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    #[derive(Serialize, Deserialize)]
    struct Percentiles {
        #[serde(with = "super::seconds")]
        p50: Duration,
        #[serde(with = "super::seconds")]
        p90: Duration,
        #[serde(with = "super::seconds")]
        p99: Duration,
    }

    type Triple = Option<(Duration, Duration, Duration)>;

    pub(crate) fn serialize<S: Serializer>(value: &Triple, s: S) -> Result<S::Ok, S::Error> {
        value
            .map(|(p50, p90, p99)| Percentiles { p50, p90, p99 })
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Triple, D::Error> {
        Ok(Option::<Percentiles>::deserialize(d)?.map(|p| (p.p50, p.p90, p.p99)))
    }
}

/// A list of `(name, value)` pairs as an object, in the list's order.
pub(crate) mod pairs {
    use serde::de::{MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt;
    use std::marker::PhantomData;

    pub(crate) fn serialize<S, K, V>(pairs: &[(K, V)], s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }

    pub(crate) fn deserialize<'de, D, K, V>(d: D) -> Result<Vec<(K, V)>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de>,
        V: Deserialize<'de>,
    {
        struct Pairs<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for Pairs<K, V> {
            type Value = Vec<(K, V)>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some(entry) = map.next_entry()? {
                    pairs.push(entry);
                }
                Ok(pairs)
            }
        }
        d.deserialize_map(Pairs(PhantomData))
    }
}
