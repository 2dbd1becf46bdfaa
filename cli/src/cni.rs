//! The pod network in the CLI's embedded mode, through CNI plugins (Debian's
//! `containernetworking-plugins` in `/usr/lib/cni`), invoked as the CNI spec 1.0 says:
//! each plugin of the network configuration list in order for ADD (with the previous
//! plugin's result as `prevResult`), in reverse order for DEL; configuration on stdin,
//! parameters in `CNI_*` environment variables, result or error as JSON on stdout.
//!
//! peapod's network is its own: bridge `peapod0` with a gateway address, subnet
//! `10.89.0.0/24`, host-local IPAM in its default directory `/var/lib/cni/networks/peapod`
//! whatever `--root` says (the bridge and its subnet are the host's, so must be the
//! record of which address is taken: two roots with IPAM of their own gave two pods one
//! address), no masquerading (peapod leaves the host's firewall alone), plus `loopback`
//! for `lo`. The CNI container id is the pod's uid, unique across roots and runs (a
//! pod's name is not: host-local releases every address of a container id on DEL). DEL is run on pod
//! deletion even when the pod's network namespace is already gone (IPAM release).
//!
//! A pod with host ports gets the `portmap` plugin chained after the bridge, declaring
//! the `portMappings` capability as containerd's default conflist does; its mappings
//! reach it as libcni passes runtime data (`injectRuntimeConfig`): under `runtimeConfig`,
//! only to plugins whose `capabilities` ask for that key, on ADD and on DEL alike
//! (`portmap` removes its rules on DEL only when given the mappings). `portmap` adds
//! iptables nat rules (DNAT in chain `CNI-DN-<hash of network name and container id>`,
//! jumped to from the shared `CNI-HOSTPORT-DNAT`; the shared `CNI-HOSTPORT-SETMARK` and
//! `CNI-HOSTPORT-MASQ` masquerade connections from the host's loopback and hairpin ones)
//! and sets `route_localnet` on `peapod0`; pods without host ports leave the firewall
//! untouched.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::hostports::PortMapping;

/// Where Debian installs the CNI plugins.
pub const BIN_DIR: &str = "/usr/lib/cni";

/// Where host-local keeps its allocations when the configuration names no `dataDir`: a
/// directory per network, a file per address holding the container id and interface.
pub const IPAM_DIR: &str = "/var/lib/cni/networks";
/// CNI spec version peapod speaks.
pub const CNI_VERSION: &str = "1.0.0";

/// A CNI step that failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The plugin binary could not be run.
    #[error("CNI {command} {plugin}: run {binary}")]
    Exec {
        /// ADD or DEL.
        command: &'static str,
        /// Plugin type.
        plugin: String,
        /// The binary.
        binary: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The plugin reported an error (CNI error object: code, msg, details).
    #[error("CNI {command} {plugin}: {message}")]
    Plugin {
        /// ADD or DEL.
        command: &'static str,
        /// Plugin type.
        plugin: String,
        /// Its message.
        message: String,
    },
}

/// A network configuration list.
#[derive(Debug, Clone)]
pub struct Network {
    /// The conflist (`name`, `cniVersion`, `plugins`).
    pub conflist: Value,
    /// Runtime data by capability name (`portMappings`), for the plugins that declare it.
    pub runtime_config: serde_json::Map<String, Value>,
    bin_dir: PathBuf,
}

/// What ADD gave the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    /// The pod's IPv4 address (without prefix), if any.
    pub ip: Option<String>,
    /// The final CNI result, kept for DEL's `prevResult`.
    pub result: String,
}

impl Network {
    /// peapod's default bridge network (IPAM state in host-local's default directory,
    /// [`IPAM_DIR`]`/peapod`).
    pub fn peapod_default() -> Network {
        Network {
            conflist: json!({
                "cniVersion": CNI_VERSION,
                "name": "peapod",
                "plugins": [{
                    "type": "bridge",
                    "bridge": "peapod0",
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "10.89.0.0/24"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    }
                }]
            }),
            runtime_config: serde_json::Map::new(),
            bin_dir: PathBuf::from(BIN_DIR),
        }
    }

    /// This network with the pod's host ports: with none, unchanged; else the `portmap`
    /// plugin appended (capability `portMappings`, `snat` on, its default) and the
    /// mappings given as that capability's runtime data.
    pub fn with_port_mappings(mut self, mappings: &[PortMapping]) -> Network {
        if mappings.is_empty() {
            return self;
        }
        if let Some(plugins) = self.conflist["plugins"].as_array_mut() {
            plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
        }
        self.runtime_config.insert("portMappings".into(), json!(mappings));
        self
    }

    /// The loopback network (brings `lo` up).
    pub fn loopback() -> Network {
        Network {
            conflist: json!({"cniVersion": CNI_VERSION, "name": "peapod-loopback", "plugins": [{"type": "loopback"}]}),
            runtime_config: serde_json::Map::new(),
            bin_dir: PathBuf::from(BIN_DIR),
        }
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        self.conflist["name"].as_str().unwrap_or("")
    }

    fn plugins(&self) -> Vec<Value> {
        self.conflist["plugins"].as_array().cloned().unwrap_or_default()
    }

    /// The configuration one plugin receives: its own object plus the list's `name` and
    /// `cniVersion`, `prevResult` when there is one, and `runtimeConfig` with the runtime
    /// data of each capability the plugin declares (`"capabilities": {"portMappings":
    /// true}`), as libcni's `injectRuntimeConfig` builds it.
    pub fn plugin_config(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["name"] = self.conflist["name"].clone();
        conf["cniVersion"] = self.conflist["cniVersion"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        let runtime: serde_json::Map<String, Value> = plugin["capabilities"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .filter_map(|(cap, _)| Some((cap.clone(), self.runtime_config.get(cap)?.clone())))
            .collect();
        if !runtime.is_empty() {
            conf["runtimeConfig"] = Value::Object(runtime);
        }
        conf
    }

    fn invoke(
        &self,
        command: &'static str,
        plugin: &Value,
        prev: Option<&Value>,
        id: &str,
        netns: &str,
        ifname: &str,
    ) -> Result<Option<Value>, CniError> {
        let typ = plugin["type"].as_str().unwrap_or("").to_string();
        let binary = self.bin_dir.join(&typ);
        let conf = self.plugin_config(plugin, prev);
        let exec_err = |source| CniError::Exec {
            command,
            plugin: typ.clone(),
            binary: binary.clone(),
            source,
        };
        let mut child = Command::new(&binary)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(exec_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(conf.to_string().as_bytes())
                .map_err(|e| CniError::Exec {
                    command,
                    plugin: typ.clone(),
                    binary: binary.clone(),
                    source: e,
                })?;
        }
        let out = child.wait_with_output().map_err(|e| CniError::Exec {
            command,
            plugin: typ.clone(),
            binary: binary.clone(),
            source: e,
        })?;
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if !out.status.success() {
            let message = parsed
                .as_ref()
                .map(|v| {
                    let msg = v["msg"].as_str().unwrap_or("");
                    let details = v["details"].as_str().unwrap_or("");
                    format!("{msg} {details}").trim().to_string()
                })
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
            return Err(CniError::Plugin {
                command,
                plugin: typ,
                message: format!("{} ({})", message, out.status),
            });
        }
        Ok(parsed)
    }

    /// ADD: attaches interface `ifname` in `netns` (a path such as `/proc/<pid>/ns/net`)
    /// for container `id`.
    pub fn add(&self, id: &str, netns: &str, ifname: &str) -> Result<Attachment, CniError> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            if let Some(result) = self.invoke("ADD", &plugin, prev.as_ref(), id, netns, ifname)? {
                prev = Some(result);
            }
        }
        let result = prev.unwrap_or(Value::Null);
        let ip = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str())
            .find(|a| a.contains('.'))
            .map(|a| a.split('/').next().unwrap_or(a).to_string());
        Ok(Attachment {
            ip,
            result: result.to_string(),
        })
    }

    /// DEL: the reverse of ADD; `netns` may be empty when the namespace is gone (IPAM is
    /// still released). `prev` is ADD's result, when known.
    pub fn del(&self, id: &str, netns: &str, ifname: &str, prev: Option<&str>) -> Result<(), CniError> {
        let prev: Option<Value> = prev
            .and_then(|p| serde_json::from_str(p).ok())
            .filter(|v: &Value| !v.is_null());
        let mut first_error = None;
        for plugin in self.plugins().iter().rev() {
            if let Err(e) = self.invoke("DEL", plugin, prev.as_ref(), id, netns, ifname) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_carries_list_name_version_and_prev_result() {
        let n = Network::peapod_default();
        let plugin = &n.plugins()[0];
        let prev = json!({"cniVersion": CNI_VERSION, "ips": []});
        let conf = n.plugin_config(plugin, Some(&prev));
        assert_eq!(conf["name"], "peapod");
        assert_eq!(conf["cniVersion"], CNI_VERSION);
        assert_eq!(conf["type"], "bridge");
        assert_eq!(conf["prevResult"], prev);
        assert!(conf["ipam"].get("dataDir").is_none(), "{conf}");
        assert!(n.plugin_config(plugin, None).get("prevResult").is_none());
    }

    #[test]
    fn port_mappings_reach_portmap_only_as_its_runtime_config() {
        let plain = Network::peapod_default();
        assert_eq!(
            plain.clone().with_port_mappings(&[]).plugins().len(),
            1,
            "no host ports: no portmap"
        );
        let mappings = [
            PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            },
            PortMapping {
                host_port: 5353,
                container_port: 53,
                protocol: "udp".into(),
                host_ip: "192.0.2.2".into(),
            },
        ];
        let n = plain.with_port_mappings(&mappings);
        let plugins = n.plugins();
        assert_eq!(plugins.len(), 2);
        assert_eq!(plugins[1]["type"], "portmap");
        let bridge = n.plugin_config(&plugins[0], None);
        assert!(bridge.get("runtimeConfig").is_none(), "{bridge}");
        let prev = json!({"cniVersion": CNI_VERSION, "ips": []});
        let portmap = n.plugin_config(&plugins[1], Some(&prev));
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.0.2.2"},
            ]})
        );
        assert_eq!(portmap["capabilities"], json!({"portMappings": true}));
        assert_eq!(portmap["snat"], true);
        assert_eq!(portmap["name"], "peapod");
        assert_eq!(portmap["prevResult"], prev);
        // A capability the runtime has no data for is not injected.
        let mut other = plugins[1].clone();
        other["capabilities"] = json!({"bandwidth": true});
        assert!(n.plugin_config(&other, None).get("runtimeConfig").is_none());
    }
}
