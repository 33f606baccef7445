//! Every released version of the contract, served side by side: the one place where
//! a guest built for an older `sandsock:net` is adapted to today's internals.
//!
//! Under semver every 0.x minor is a major, so wasmtime's semver-compatible linking
//! does nothing between 0.1, 0.4 and 1.0: each older version has its own bindings
//! (generated from its WIT, kept in `wit/VERSION/`), its own imports in the linker
//! (their names carry the version, so they do not clash), and its own `handle` call.
//! Each adapter gives its guests exactly what their contract promised, where today's
//! contract says something else (see each module).
//!
//! - [`v0_1`]: 0.1.0, as released with hot swap.
//! - [`v0_2`]: 0.2.0 (`invalid-address`, a `restore` that can refuse).
//! - [`v0_3`]: 0.3.0 (`tls`).
//! - [`v0_4`]: 0.4.0 (`close` answering nothing, `log`), the last that reads for
//!   itself.
//! - [`v1_0`]: 1.0.0 and 1.1.0 (today's), native (`shared::wit`): the loop's events
//!   lowered into their records, readable connections read for the guest first, the
//!   store's answers and topic messages (1.1) added. A 1.x minor only adds, so one
//!   set of bindings serves every 1.x guest: wasmtime's semver matching links a
//!   1.0 guest's imports to 1.1's.

#[macro_use]
mod older;
pub mod v0_1;
pub mod v0_2;
pub mod v0_3;
pub mod v0_4;
pub mod v1_0;

use std::fmt;

use anyhow::{Result, bail};
use wasmtime::component::{
    Component, ComponentExportIndex, HasSelf, Instance, InstancePre, Linker, TypedFunc,
};
use wasmtime::{Engine, Store};

use super::imports::GuestState;
use crate::shared::wit;
use crate::sockets::events::Event;

/// A version of the contract this host serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Contract {
    /// `sandsock:net@0.1.0`.
    V0_1,
    /// `sandsock:net@0.2.0`.
    V0_2,
    /// `sandsock:net@0.3.0`.
    V0_3,
    /// `sandsock:net@0.4.0`.
    V0_4,
    /// `sandsock:net@1.0.0`: served natively, by 1.1's bindings.
    V1_0,
    /// `sandsock:net@1.1.0`, today's: served natively.
    V1_1,
}

impl Contract {
    /// Every version served, oldest first.
    pub const ALL: [Contract; 6] = [
        Self::V0_1,
        Self::V0_2,
        Self::V0_3,
        Self::V0_4,
        Self::V1_0,
        Self::V1_1,
    ];
    /// The version the host's internals speak, and the SDKs build.
    pub const CURRENT: Contract = Self::V1_1;

    /// Its semver, as in the package name.
    pub fn version(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
            Self::V0_2 => "0.2.0",
            Self::V0_3 => "0.3.0",
            Self::V0_4 => "0.4.0",
            Self::V1_0 => "1.0.0",
            Self::V1_1 => wit::VERSION,
        }
    }

    /// The served version a component built for `version` runs on, if any: each
    /// 0.x exactly, and each 1.x minor with any patch (a patch changes no WIT). A
    /// 1.x newer than the host's is not served: it may use what this host does not
    /// have.
    pub fn of(version: &str) -> Option<Contract> {
        let minor = |m: &str| {
            version
                .strip_prefix(m)
                .is_some_and(|patch| patch.parse::<u32>().is_ok())
        };
        if minor("1.0.") {
            return Some(Self::V1_0);
        }
        if minor("1.1.") {
            return Some(Self::V1_1);
        }
        Self::ALL.into_iter().find(|c| c.version() == version)
    }

    /// Whether its guests run on today's bindings, with no adapter between: every
    /// 1.x (a minor only adds).
    pub fn is_native(self) -> bool {
        matches!(self, Self::V1_0 | Self::V1_1)
    }

    /// Its `handler` world's name, as `host check` reports it.
    pub fn world(self) -> String {
        format!("{}/handler@{}", wit::PACKAGE, self.version())
    }

    /// The name of its optional `state` interface, as a component exports it.
    fn state_interface(self) -> String {
        format!("{}/state@{}", wit::PACKAGE, self.version())
    }

    /// Every version served, for messages: `0.1.0, 0.2.0, 0.3.0, 0.4.0 and 1.0.0`.
    pub fn all_versions() -> String {
        let versions: Vec<&str> = Self::ALL.iter().map(|c| c.version()).collect();
        let (last, rest) = versions.split_last().expect("at least one version");
        format!("{} and {last}", rest.join(", "))
    }
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", wit::PACKAGE, self.version())
    }
}

/// Puts every served version's imports into `linker`.
pub fn add_to_linker(linker: &mut Linker<GuestState>) -> Result<()> {
    v0_1::Handler::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    v0_2::Handler::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    v0_3::Handler::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    v0_4::Handler::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    wit::Handler::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)?;
    Ok(())
}

/// The version a component was built for: the one its contract imports and exports
/// name, which must all agree. A component that names none (a guest that makes no
/// `io` call, say) gets the newest version whose `handle` it fits, checked when its
/// exports are looked up. An unknown version is refused with one line naming it and
/// the ones served (wasmtime's own words, "expected variant of 7 cases, found 8", say
/// nothing of versions).
pub fn built_for(engine: &Engine, component: &Component) -> Result<Option<Contract>> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(name, _)| name)
        .chain(ty.exports(engine).map(|(name, _)| name));
    let mut found: Option<Contract> = None;
    for name in names {
        let Some(version) = contract_version(name) else {
            continue;
        };
        let Some(contract) = Contract::of(version) else {
            bail!(
                "built for {}@{version}; this host serves {} {} (rebuild the guest \
                 against this host's wit/, or serve it with a host that speaks {version})",
                wit::PACKAGE,
                wit::PACKAGE,
                Contract::all_versions()
            );
        };
        match found {
            Some(other) if other != contract => {
                bail!("built for two versions of the contract at once ({other} and {contract})")
            }
            _ => found = Some(contract),
        }
    }
    Ok(found)
}

/// The contract version an import or export name like `sandsock:net/io@0.1.0` is
/// for, if it is one of the contract's.
fn contract_version(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(wit::PACKAGE)?.strip_prefix('/')?;
    rest.split_once('@').map(|(_, version)| version)
}

/// Where a compiled guest's `handle` (and its version's types) are: found once per
/// compiled guest, loaded once per instance.
#[derive(Clone)]
pub(crate) enum Exports {
    V0_1(v0_1::HandlerIndices),
    V0_2(v0_2::HandlerIndices),
    V0_3(v0_3::HandlerIndices),
    V0_4(v0_4::HandlerIndices),
    V1(wit::HandlerIndices),
}

impl Exports {
    /// Looks `handle` up for `contract`, checking its type; with no contract named,
    /// tries the newest version first.
    pub fn find(
        contract: Option<Contract>,
        pre: &InstancePre<GuestState>,
    ) -> Result<(Contract, Self)> {
        let one = |contract: Contract| -> Result<Self> {
            Ok(match contract {
                Contract::V0_1 => Self::V0_1(v0_1::HandlerIndices::new(pre)?),
                Contract::V0_2 => Self::V0_2(v0_2::HandlerIndices::new(pre)?),
                Contract::V0_3 => Self::V0_3(v0_3::HandlerIndices::new(pre)?),
                Contract::V0_4 => Self::V0_4(v0_4::HandlerIndices::new(pre)?),
                Contract::V1_0 | Contract::V1_1 => Self::V1(wit::HandlerIndices::new(pre)?),
            })
        };
        if let Some(contract) = contract {
            return Ok((contract, one(contract)?));
        }
        let mut first_error = None;
        for contract in Contract::ALL.into_iter().rev() {
            match one(contract) {
                Ok(exports) => return Ok((contract, exports)),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        Err(first_error.expect("at least one version"))
    }

    /// The `handle` of one instance.
    pub fn load(&self, store: &mut Store<GuestState>, instance: &Instance) -> Result<Handle> {
        Ok(match self {
            Self::V0_1(indices) => Handle::V0_1(indices.load(store, instance)?, Vec::new()),
            Self::V0_2(indices) => Handle::V0_2(indices.load(store, instance)?, Vec::new()),
            Self::V0_3(indices) => Handle::V0_3(indices.load(store, instance)?, Vec::new()),
            Self::V0_4(indices) => Handle::V0_4(indices.load(store, instance)?, Vec::new()),
            Self::V1(indices) => {
                Handle::V1(indices.load(store, instance)?, v1_0::Lowered::default())
            }
        })
    }
}

/// One instance's `handle`, in its contract's types, with a batch in those types kept
/// between calls, so that converting one allocates nothing once it has grown.
pub(crate) enum Handle {
    V0_1(v0_1::Handler, Vec<v0_1::types::Event>),
    V0_2(v0_2::Handler, Vec<v0_2::types::Event>),
    V0_3(v0_3::Handler, Vec<v0_3::types::Event>),
    V0_4(v0_4::Handler, Vec<v0_4::types::Event>),
    V1(wit::Handler, v1_0::Lowered),
}

impl Handle {
    /// Calls `handle` with `events`, converted into its version's types (for 1.0,
    /// with the readable connections read first).
    pub fn call(&mut self, store: &mut Store<GuestState>, events: &[Event]) -> Result<()> {
        fn convert<'a, T>(
            batch: &'a mut Vec<T>,
            events: &[Event],
            event: fn(&Event) -> Option<T>,
        ) -> &'a [T] {
            batch.clear();
            batch.extend(events.iter().filter_map(event));
            batch
        }
        let called = match self {
            Self::V0_1(handler, batch) => {
                handler.call_handle(store, convert(batch, events, v0_1::event))
            }
            Self::V0_2(handler, batch) => {
                handler.call_handle(store, convert(batch, events, v0_2::event))
            }
            Self::V0_3(handler, batch) => {
                handler.call_handle(store, convert(batch, events, v0_3::event))
            }
            Self::V0_4(handler, batch) => {
                handler.call_handle(store, convert(batch, events, v0_4::event))
            }
            Self::V1(handler, lowered) => {
                let state = store.data_mut();
                lowered.lend(state.net.lend_input());
                lowered.lower(state, events);
                let called = handler.call_handle(&mut *store, &lowered.events, lowered.input());
                store.data_mut().net.return_input(lowered.give_back());
                called
            }
        };
        called.map_err(anyhow::Error::from)
    }
}

/// The optional `state` interface's exports, for the version the guest was built for.
#[derive(Clone, Copy)]
pub(crate) struct StateExports {
    snapshot: ComponentExportIndex,
    restore: ComponentExportIndex,
    /// 0.1's `restore` answers nothing: it cannot refuse a snapshot.
    refusable: bool,
}

impl StateExports {
    /// Where `component` exports `state`, if it does.
    pub fn find(component: &Component, contract: Contract) -> Option<Self> {
        let interface = component.get_export_index(None, contract.state_interface())?;
        Some(Self {
            snapshot: component.get_export_index(Some(&interface), "snapshot")?,
            restore: component.get_export_index(Some(&interface), "restore")?,
            refusable: contract != Contract::V0_1,
        })
    }

    /// The typed functions of one instance.
    pub fn load(self, store: &mut Store<GuestState>, instance: &Instance) -> Result<State> {
        let snapshot = instance.get_typed_func(&mut *store, self.snapshot)?;
        let restore = if self.refusable {
            Restore::Refusable(instance.get_typed_func(&mut *store, self.restore)?)
        } else {
            Restore::Plain(instance.get_typed_func(&mut *store, self.restore)?)
        };
        Ok(State { snapshot, restore })
    }
}

/// One instance's `state` functions.
pub(crate) struct State {
    snapshot: TypedFunc<(), (Vec<u8>,)>,
    restore: Restore,
}

enum Restore {
    Refusable(TypedFunc<(Vec<u8>,), (Result<(), String>,)>),
    Plain(TypedFunc<(Vec<u8>,), ()>),
}

impl State {
    /// The instance's snapshot.
    pub fn snapshot(&self, store: &mut Store<GuestState>) -> Result<Vec<u8>> {
        let (state,) = self.snapshot.call(store, ())?;
        Ok(state)
    }

    /// Hands `state` to `restore`: the outer error is a trap, the inner one the
    /// guest refusing it (a 0.1 guest cannot refuse).
    pub fn restore(
        &self,
        store: &mut Store<GuestState>,
        state: Vec<u8>,
    ) -> Result<Result<(), String>> {
        match &self.restore {
            Restore::Refusable(restore) => {
                let (refusal,) = restore.call(store, (state,))?;
                Ok(refusal)
            }
            Restore::Plain(restore) => {
                restore.call(store, (state,))?;
                Ok(Ok(()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_versions_are_read_off_names() {
        assert_eq!(contract_version("sandsock:net/io@0.1.0"), Some("0.1.0"));
        assert_eq!(contract_version("sandsock:net/state@0.4.0"), Some("0.4.0"));
        assert_eq!(contract_version("wasi:cli/stdout@0.2.6"), None);
        assert_eq!(contract_version("handle"), None);
        assert_eq!(contract_version("sandsock:network/io@1.0.0"), None);
    }

    #[test]
    fn every_version_is_known_by_its_name() {
        for contract in Contract::ALL {
            assert_eq!(Contract::of(contract.version()), Some(contract));
        }
        assert_eq!(Contract::of("0.9.0"), None);
        assert_eq!(Contract::of("1.0.3"), Some(Contract::V1_0));
        assert_eq!(Contract::of("1.1.2"), Some(Contract::V1_1));
        assert_eq!(Contract::of("1.2.0"), None, "newer than the host");
        assert_eq!(Contract::of("1.1.x"), None);
        assert_eq!(
            Contract::all_versions(),
            "0.1.0, 0.2.0, 0.3.0, 0.4.0, 1.0.0 and 1.1.0"
        );
        assert!(Contract::CURRENT.is_native() && Contract::V1_0.is_native());
        assert!(!Contract::V0_4.is_native());
    }
}
