//! The policy's on/off switches, declared once. [`Switches`] holds one value per switch (an
//! org's setting, a key's, a change to either, what a key ends up with), and [`SWITCHES`]
//! says what each one is. Every surface is made from them: the store's columns, the admin
//! API's members and its OpenAPI document, the bundle's keys, the command line's flags, the
//! audit log's change lists. A new switch is its name in [`with_switches!`], its entry in
//! [`SWITCHES`], its storage column (a migration) and its README line; what it switches is
//! read from [`Resolved::on`](super::Resolved).

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use super::Setting;

/// Calls macro `$m` with the switches' names, in order. The one list of them: what is made at
/// compile time ([`Switches`] itself, the bundle's fields) is made from it.
#[macro_export]
macro_rules! with_switches {
    ($m:ident) => {
        $m! { pii, secrets, response_redaction }
    };
}

/// What a switch is.
#[derive(Debug, Clone, Copy)]
pub struct Switch {
    /// Its name for people (the console's label).
    pub title: &'static str,
    /// What it does, said of an org (the command line's help, the API's description).
    pub help: &'static str,
    /// What it does, said of a key (the same for a key, which may also inherit its org's).
    pub key_help: &'static str,
    /// A new org's setting. PII's is replaced by the config's `[pii] default` (whose own
    /// default is this), wherever a config is in use.
    pub new_org: Setting,
    /// What a key that inherits gets when its org is gone (a dangling row): on for what
    /// protects (fails closed), off for what the org must ask for.
    pub without_org: bool,
}

/// Every switch.
pub const SWITCHES: Switches<Switch> = Switches {
    pii: Switch {
        title: "PII redaction",
        help: "PII redaction for the org's requests (a new org's default: `[pii] default` in \
               the config).",
        key_help: "PII redaction for this key; `inherit` (a new key's default) follows the org.",
        new_org: Setting::On,
        without_org: true,
    },
    secrets: Switch {
        title: "Secret redaction",
        help: "Secret detection (API keys, tokens, JWTs, private keys, URL credentials) in the \
               org's traffic (default on).",
        key_help: "Secret detection for this key; `inherit` (a new key's default) follows the \
                   org.",
        new_org: Setting::On,
        without_org: true,
    },
    response_redaction: Switch {
        title: "Response redaction",
        help: "Redaction of what comes back: responses and streams, PII and secrets as the \
               org's settings say (default off).",
        key_help: "Response redaction for this key; `inherit` (a new key's default) follows \
                   the org.",
        new_org: Setting::Off,
        without_org: false,
    },
};

macro_rules! define_switches {
    ($($name:ident),+) => {
        /// One value per switch (see [`SWITCHES`]). Serialized as one member per switch, by
        /// its name (flattened into an org's or a key's JSON); read (as
        /// `Switches<Option<T>>`) from members that may each be absent.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct Switches<T> {
            $(pub $name: T,)+
        }

        /// The switches' names, in order: API members, bundle keys, store columns; the
        /// command line's flags spell them with `-`.
        pub const SWITCH_NAMES: &[&str] = &[$(stringify!($name)),+];

        impl<T> Switches<T> {
            /// Each value through `f`, with its switch's name.
            pub fn map_named<'a, U>(
                &'a self,
                mut f: impl FnMut(&'static str, &'a T) -> U,
            ) -> Switches<U> {
                Switches { $($name: f(stringify!($name), &self.$name),)+ }
            }

            /// Each value through `f`, with its name, in order; the first error is the one
            /// returned.
            pub fn try_map_named<U, E>(
                &self,
                mut f: impl FnMut(&'static str, &T) -> Result<U, E>,
            ) -> Result<Switches<U>, E> {
                Ok(Switches { $($name: f(stringify!($name), &self.$name)?,)+ })
            }

            /// Each value with its counterpart in `other`, through `f`, with its name.
            pub fn zip_named<M, U>(
                &self,
                other: &Switches<M>,
                mut f: impl FnMut(&'static str, &T, &M) -> U,
            ) -> Switches<U> {
                Switches { $($name: f(stringify!($name), &self.$name, &other.$name),)+ }
            }

            /// A value per switch from `f` (given its name), in order; the first error is
            /// the one returned.
            pub fn try_from_fn<E>(
                mut f: impl FnMut(&'static str) -> Result<T, E>,
            ) -> Result<Switches<T>, E> {
                Ok(Switches { $($name: f(stringify!($name))?,)+ })
            }

            /// The value of the switch named `name`.
            pub fn get_mut(&mut self, name: &str) -> Option<&mut T> {
                match name {
                    $(stringify!($name) => Some(&mut self.$name),)+
                    _ => None,
                }
            }
        }
    };
}

with_switches!(define_switches);

impl<T> Switches<T> {
    /// Each value through `f`.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Switches<U> {
        self.map_named(|_, v| f(v))
    }

    /// Each value with its counterpart in `other`, through `f`.
    pub fn zip<M, U>(&self, other: &Switches<M>, mut f: impl FnMut(&T, &M) -> U) -> Switches<U> {
        self.zip_named(other, |_, a, b| f(a, b))
    }

    /// Each switch's name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &T)> + '_ {
        let mut v = Vec::with_capacity(SWITCH_NAMES.len());
        self.map_named(|n, t| v.push((n, t)));
        v.into_iter()
    }

    /// A value per switch from `f`, given its name and what it is.
    pub fn from_table(f: impl FnMut(&'static str, &Switch) -> T) -> Switches<T> {
        SWITCHES.map_named(f)
    }
}

impl<T: Serialize> Serialize for Switches<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Switches", SWITCH_NAMES.len())?;
        for (name, v) in self.iter() {
            st.serialize_field(name, v)?;
        }
        st.end()
    }
}

/// Read from a map whose members are switches, each at most once; one absent is `None`. Its
/// fields are the switches' names (what `serde_introspect` reports for a body's part).
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Switches<Option<T>> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Switches<Option<T>>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the policy's switches")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Switches::<Option<T>>::default();
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    // Not the caller's text: only a declared name is ever named.
                    let Some(name) = SWITCH_NAMES.iter().find(|n| **n == k) else {
                        return Err(A::Error::custom("an unknown field"));
                    };
                    match out.get_mut(name) {
                        Some(slot @ None) => *slot = Some(m.next_value()?),
                        _ => return Err(A::Error::duplicate_field(name)),
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_struct("Switches", SWITCH_NAMES, V(std::marker::PhantomData))
    }
}
