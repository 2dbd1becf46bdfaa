//! The start gate: when a member of a pod may start (mirrors kubelet, KEP-753 native
//! sidecars).
//!
//! A sidecar or app container may start once every init container created before it has
//! exited 0 and every sidecar created before it is running; an init container waits
//! likewise (init containers run one by one). Apps do not wait for each other. Creation
//! order is declaration order. A pod that declared its containers up front is gated by
//! that list ([`gate_declared`]), so members not created yet still count; otherwise by
//! the members seen so far, in creation order ([`gate`]).

use super::{DeclaredContainer, Role};

/// A member as the start gate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Container id (for error messages).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// Its program runs.
    pub running: bool,
    /// Its exit code, once exited.
    pub exit_code: Option<i32>,
}

/// What the start of a member must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Start now.
    Open,
    /// Wait: an earlier member is not done (named).
    Wait(String),
    /// Never: an earlier init container failed (named, with its exit code).
    Failed(String, i32),
}

/// The start gate for the container named `me` of a pod that declared its containers:
/// every init container declared before it must have exited 0 and every sidecar declared
/// before it must run, whether or not the shim has seen them yet (`state` returns `None`
/// for those). A container the pod did not declare waits for all declared ones.
pub fn gate_declared(declared: &[DeclaredContainer], me: &str, state: impl Fn(&str) -> Option<MemberView>) -> Gate {
    let before = declared.iter().position(|d| d.name == me).unwrap_or(declared.len());
    for d in &declared[..before] {
        let s = state(&d.name);
        match (d.role, s) {
            (Role::App, _) => {}
            (_, None) => return Gate::Wait(d.name.clone()),
            (Role::Init, Some(m)) => match m.exit_code {
                Some(0) => {}
                Some(code) => return Gate::Failed(d.name.clone(), code),
                None => return Gate::Wait(d.name.clone()),
            },
            (Role::Sidecar, Some(m)) => match (m.running, m.exit_code) {
                (true, _) => {}
                (false, Some(code)) => return Gate::Failed(d.name.clone(), code),
                (false, None) => return Gate::Wait(d.name.clone()),
            },
        }
    }
    Gate::Open
}

/// The start gate for `members[me]`, with `members` in creation order (KEP-753); used
/// when the pod declared no container list.
pub fn gate(members: &[MemberView], me: usize) -> Gate {
    for m in &members[..me] {
        match (m.role, m.exit_code) {
            (Role::Init, Some(0)) => {}
            (Role::Init | Role::Sidecar, Some(code)) if !m.running => return Gate::Failed(m.id.clone(), code),
            (Role::Init, _) => return Gate::Wait(m.id.clone()),
            (Role::Sidecar, _) if !m.running => return Gate::Wait(m.id.clone()),
            _ => {}
        }
    }
    Gate::Open
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, role: Role, running: bool, exit: Option<i32>) -> MemberView {
        MemberView {
            id: id.into(),
            role,
            running,
            exit_code: exit,
        }
    }

    #[test]
    fn declared_gate_waits_for_members_not_seen_yet() {
        let declared = [
            DeclaredContainer {
                name: "i1".into(),
                role: Role::Init,
            },
            DeclaredContainer {
                name: "s1".into(),
                role: Role::Sidecar,
            },
            DeclaredContainer {
                name: "a1".into(),
                role: Role::App,
            },
            DeclaredContainer {
                name: "a2".into(),
                role: Role::App,
            },
        ];
        let none = |_: &str| None;
        assert_eq!(gate_declared(&declared, "a2", none), Gate::Wait("i1".into()));
        assert_eq!(gate_declared(&declared, "i1", none), Gate::Open);
        let seen = |n: &str| match n {
            "i1" => Some(m("i1", Role::Init, false, Some(0))),
            "s1" => Some(m("s1", Role::Sidecar, true, None)),
            _ => None,
        };
        assert_eq!(
            gate_declared(&declared, "a2", seen),
            Gate::Open,
            "a1 not started does not hold a2"
        );
        assert_eq!(gate_declared(&declared, "other", seen), Gate::Open);
        let failed = |n: &str| (n == "i1").then(|| m("i1", Role::Init, false, Some(1)));
        assert_eq!(gate_declared(&declared, "s1", failed), Gate::Failed("i1".into(), 1));
    }

    #[test]
    fn start_gate_follows_kep_753() {
        let init_running = [m("i1", Role::Init, true, None), m("app", Role::App, false, None)];
        assert_eq!(gate(&init_running, 1), Gate::Wait("i1".into()));
        let init_done = [
            m("i1", Role::Init, false, Some(0)),
            m("s1", Role::Sidecar, false, None),
            m("app", Role::App, false, None),
        ];
        assert_eq!(gate(&init_done, 1), Gate::Open);
        assert_eq!(gate(&init_done, 2), Gate::Wait("s1".into()));
        let sidecar_up = [
            m("i1", Role::Init, false, Some(0)),
            m("s1", Role::Sidecar, true, None),
            m("a1", Role::App, false, None),
            m("a2", Role::App, false, None),
        ];
        assert_eq!(gate(&sidecar_up, 2), Gate::Open);
        assert_eq!(gate(&sidecar_up, 3), Gate::Open, "apps do not wait for each other");
        let init_failed = [m("i1", Role::Init, false, Some(2)), m("a1", Role::App, false, None)];
        assert_eq!(gate(&init_failed, 1), Gate::Failed("i1".into(), 2));
        let second_init = [m("i1", Role::Init, true, None), m("i2", Role::Init, false, None)];
        assert_eq!(
            gate(&second_init, 1),
            Gate::Wait("i1".into()),
            "init containers run one by one"
        );
    }
}
