//! Registry credentials: Docker config files as pull Secrets carry them, kubelet's keyring
//! that picks the entries matching an image, and the registry's authentication
//! handshake (the OCI distribution spec's, Docker's token protocol).
//!
//! **Config files.** A `kubernetes.io/dockerconfigjson` Secret holds `.dockerconfigjson`,
//! `{"auths": {"<registry>": {...}}}`; the legacy `kubernetes.io/dockercfg` holds
//! `.dockercfg`, the same entries without `auths`. An entry gives `auth`
//! (base64 of `user:password`, which wins over `username`/`password`, as kubelet's
//! `DockerConfigEntry.UnmarshalJSON` decides), `identitytoken` (an OAuth2 refresh
//! token) or `registrytoken` (a bearer token for the registry itself).
//!
//! **Matching** (kubelet's `pkg/credentialprovider/keyring.go`, `BasicDockerKeyring`):
//! each key loses its `http://`/`https://` scheme and a `/v1/` or `/v2/` path prefix and
//! becomes `host[:port][/path]`; an image's repository (`registry/path`, no tag) matches
//! a key when the ports are equal, the host has as many dot-separated parts, each part
//! matches the key's as a glob (`*`, `?`; `*.example.com`), and the key's path is a
//! prefix of the repository's path. Keys are tried in reverse lexical order (more
//! specific paths first), every match is a candidate; when none matches, a Docker Hub
//! image uses the `index.docker.io` entry (`https://index.docker.io/v1/`, what
//! `docker login` writes).
//!
//! **Handshake** (distribution spec "Authentication", Docker's `token` and `oauth`
//! documents): `GET /v2/` anonymously; a 401 names a scheme in `WWW-Authenticate`.
//! `Basic`: the credentials go in every request. `Bearer realm=…,service=…`: a token
//! comes from the realm for `scope=repository:<path>:pull`, asked with `GET` and Basic
//! credentials (username/password), or with a `POST` form
//! `grant_type=refresh_token` (identity token); the answer's `token` or `access_token`
//! is then sent as `Authorization: Bearer`. A registry token is sent as the bearer
//! token directly, without the handshake.
//!
//! Credentials never reach a log or an error: [`AuthConfig`]'s `Debug` redacts them, and
//! errors quote only status lines and the token endpoint's own answer.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};

/// Credentials for one registry: kubelet's `credentialprovider.AuthConfig`, what CRI's
/// `AuthConfig` carries. Empty strings are absent fields.
/// Serializable only to hand a pod's credentials to its image puller on a pipe
/// ([`crate::runner::spawn_puller`]); never written to a file.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthConfig {
    /// The user name (Basic auth, or the token endpoint's Basic auth).
    pub username: String,
    /// The password.
    pub password: String,
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token endpoint.
    pub identity_token: String,
    /// A bearer token for the registry itself (`registrytoken`).
    pub registry_token: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

/// One entry of a Docker config file, as written.
#[derive(Deserialize)]
struct DockerConfigEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

/// `.dockerconfigjson`'s shape.
#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

/// The entries of a `.dockerconfigjson` document (`{"auths": {...}}`), by registry key
/// as written.
///
/// Errors: not JSON of that shape, or an `auth` that is not base64 of `user:password`
/// (the message names the key; it never quotes a credential).
pub fn parse_docker_config_json(bytes: &[u8]) -> Result<Vec<(String, AuthConfig)>, String> {
    let config: DockerConfigJson = serde_json::from_slice(bytes).map_err(|e| format!("not a Docker config: {e}"))?;
    entries(config.auths)
}

/// The entries of a legacy `.dockercfg` document (`{"<registry>": {...}}`), as
/// [`parse_docker_config_json`].
pub fn parse_dockercfg(bytes: &[u8]) -> Result<Vec<(String, AuthConfig)>, String> {
    let config: BTreeMap<String, DockerConfigEntry> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a Docker config: {e}"))?;
    entries(config)
}

fn entries(map: BTreeMap<String, DockerConfigEntry>) -> Result<Vec<(String, AuthConfig)>, String> {
    map.into_iter()
        .map(|(key, e)| {
            let (username, password) = if e.auth.is_empty() {
                (e.username, e.password)
            } else {
                decode_auth(&e.auth).map_err(|why| format!("auths[{key:?}].auth: {why}"))?
            };
            Ok((
                key,
                AuthConfig {
                    username,
                    password,
                    identity_token: e.identitytoken,
                    registry_token: e.registrytoken,
                },
            ))
        })
        .collect()
}

/// kubelet's `decodeDockerConfigFieldAuth`: base64 (padded or not) of `user:password`.
fn decode_auth(field: &str) -> Result<(String, String), &'static str> {
    let field = field.trim();
    let decoded = if field.ends_with('=') {
        base64::engine::general_purpose::STANDARD.decode(field)
    } else {
        base64::engine::general_purpose::STANDARD_NO_PAD.decode(field)
    }
    .map_err(|_| "not base64")?;
    let text = String::from_utf8(decoded).map_err(|_| "not UTF-8 text once decoded")?;
    text.split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .ok_or("must be formatted as base64(username:password)")
}

/// kubelet's `defaultRegistryHost`: the key `docker login` writes for Docker Hub.
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// The credentials of a pod's pull Secrets, by registry key (kubelet's
/// `BasicDockerKeyring`; see the module docs for the matching rules).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DockerKeyring {
    /// Normalized keys (`host[:port][/path]`) → credentials, in the order added.
    creds: BTreeMap<String, Vec<AuthConfig>>,
}

impl DockerKeyring {
    /// Adds the entries of one config; keys are normalized as kubelet's `Add` does (scheme
    /// and `/v1/`, `/v2/` dropped; a trailing `/` alone is no path).
    pub fn add(&mut self, entries: Vec<(String, AuthConfig)>) {
        for (key, auth) in entries {
            let rest = key
                .strip_prefix("https://")
                .or_else(|| key.strip_prefix("http://"))
                .unwrap_or(&key);
            let (host, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            let path = if path.starts_with("/v2/") || path.starts_with("/v1/") {
                &path[3..]
            } else {
                path
            };
            let key = if path.is_empty() || path == "/" {
                host.to_string()
            } else {
                format!("{host}{path}")
            };
            self.creds.entry(key).or_default().push(auth);
        }
    }

    /// Whether no credentials were added.
    pub fn is_empty(&self) -> bool {
        self.creds.is_empty()
    }

    /// The credentials to try, in order, for `repository` (`registry/path` without tag or
    /// digest, e.g. `docker.io/library/nginx`); empty when none applies (pull anonymously).
    pub fn lookup(&self, repository: &str) -> Vec<AuthConfig> {
        let mut found = Vec::new();
        for (key, creds) in self.creds.iter().rev() {
            if urls_match(key, repository) {
                found.extend(creds.iter().cloned());
            }
        }
        if found.is_empty() && is_default_registry_match(repository) {
            if let Some(creds) = self.creds.get(DEFAULT_REGISTRY_HOST) {
                found.extend(creds.iter().cloned());
            }
        }
        found
    }
}

/// kubelet's `isDefaultRegistryMatch`: whether `image` is pulled from Docker Hub.
fn is_default_registry_match(image: &str) -> bool {
    let Some((first, _)) = image.split_once('/') else {
        return !image.is_empty();
    };
    !first.is_empty() && (first == "docker.io" || first == "index.docker.io" || !first.contains(['.', ':']))
}

/// A schemeless URL split as kubelet's `ParseSchemelessURL` + `SplitURL` split it: host
/// parts (by `.`), port (or empty), path (from the first `/`, or empty).
fn split_url(url: &str) -> (Vec<&str>, &str, &str) {
    let (hostport, path) = url.find('/').map_or((url, ""), |i| url.split_at(i));
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').unwrap_or("")),
            None => (hostport, ""),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p),
            _ => (hostport, ""),
        }
    };
    (host.split('.').collect(), port, path)
}

/// kubelet's `URLsMatch`: `target` matches the key `glob` (see the module docs).
fn urls_match(glob: &str, target: &str) -> bool {
    let (glob_parts, glob_port, glob_path) = split_url(glob);
    let (target_parts, target_port, target_path) = split_url(target);
    glob_port == target_port
        && glob_parts.len() == target_parts.len()
        && target_path.starts_with(glob_path)
        && glob_parts.iter().zip(&target_parts).all(|(g, t)| glob_match(g, t))
}

/// Go's `filepath.Match` for one host part: `*` any run of characters, `?` one
/// character, anything else itself (character classes are matched literally).
fn glob_match(glob: &str, text: &str) -> bool {
    let (g, t): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    // Classic two-pointer wildcard matching with backtracking to the last `*`.
    let (mut gi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == t[ti]) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some(gi);
            mark = ti;
            gi += 1;
        } else if let Some(s) = star {
            gi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

/// The repository of a normalized reference: without `@digest` and `:tag`
/// (`docker.io/library/nginx:1.21` → `docker.io/library/nginx`).
pub fn repository_of(reference: &str) -> &str {
    let name = reference.split_once('@').map_or(reference, |(n, _)| n);
    match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

/// What a registry asked for in `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Challenge {
    /// `Basic realm=…`.
    Basic,
    /// `Bearer realm=…,service=…[,scope=…]`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` to ask the token for.
        service: Option<String>,
    },
}

/// The first Bearer or Basic challenge of a `WWW-Authenticate` value (RFC 7235, parsed
/// by `http-auth`); a Bearer challenge without `realm` does not count.
pub(super) fn parse_challenge(header: &str) -> Option<Challenge> {
    let challenges = http_auth::parse_challenges(header).ok()?;
    challenges.iter().find_map(|c| {
        let param = |name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        if c.scheme.eq_ignore_ascii_case("bearer") {
            Some(Challenge::Bearer {
                realm: param("realm")?,
                service: param("service"),
            })
        } else if c.scheme.eq_ignore_ascii_case("basic") {
            Some(Challenge::Basic)
        } else {
            None
        }
    })
}

/// How requests to a registry authenticate.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Authorization {
    /// No header.
    Anonymous,
    /// `Authorization: Basic base64(user:password)`.
    Basic(String, String),
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => write!(f, "Anonymous"),
            Self::Basic(user, _) => write!(f, "Basic({user:?}, <redacted>)"),
            Self::Bearer(_) => write!(f, "Bearer(<redacted>)"),
        }
    }
}

impl Authorization {
    /// The `Authorization` header value, if any.
    pub(super) fn header(&self) -> Option<String> {
        match self {
            Self::Anonymous => None,
            Self::Basic(user, password) => Some(basic_header(user, password)),
            Self::Bearer(token) => Some(format!("Bearer {token}")),
        }
    }

    /// The same for `oci-client`, which downloads the blobs: a bearer token is used as
    /// given; Basic credentials are sent once the registry's `/v2/` asks for them.
    pub(super) fn registry_auth(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic(user, password) => RegistryAuth::Basic(user.clone(), password.clone()),
            Self::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// `Basic base64(user:password)` (RFC 7617).
pub(super) fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The token endpoint's answer (Docker's token spec: `token`, or OAuth2's
/// `access_token`).
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
}

/// The client id sent with OAuth2 token requests (Docker's token spec asks for one).
const CLIENT_ID: &str = "peapod";

/// How much of a refusing token endpoint's body an error quotes.
const QUOTED_BODY: usize = 512;

/// The registry handshake for pulling `repository` (the path, `library/nginx`) from
/// `scheme://registry` with `auth` (see the module docs). Returns how the pull's requests
/// authenticate.
///
/// Errors: the registry cannot be reached (`RequestError`), or the token endpoint refused
/// or gave no token (`AuthenticationFailure` quoting its status line and at most 512 bytes
/// of its answer).
pub(super) async fn authorize(
    http: &reqwest::Client,
    scheme: &str,
    registry: &str,
    repository: &str,
    auth: Option<&AuthConfig>,
) -> Result<Authorization, OciDistributionError> {
    let none = AuthConfig::default();
    let auth = auth.unwrap_or(&none);
    if !auth.registry_token.is_empty() {
        return Ok(Authorization::Bearer(auth.registry_token.clone()));
    }
    let answer = http.get(format!("{scheme}://{registry}/v2/")).send().await?;
    if answer.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Ok(Authorization::Anonymous);
    }
    let challenge = answer
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_challenge);
    match challenge {
        Some(Challenge::Basic) if !auth.username.is_empty() => {
            Ok(Authorization::Basic(auth.username.clone(), auth.password.clone()))
        }
        Some(Challenge::Bearer { realm, service }) => {
            let scope = format!("repository:{repository}:pull");
            let mut params = vec![("scope", scope.as_str())];
            if let Some(s) = &service {
                params.push(("service", s));
            }
            let request = if !auth.identity_token.is_empty() {
                params.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", auth.identity_token.as_str()),
                    ("client_id", CLIENT_ID),
                ]);
                http.post(&realm).form(&params)
            } else if !auth.username.is_empty() {
                http.get(&realm).query(&params).header(
                    reqwest::header::AUTHORIZATION,
                    basic_header(&auth.username, &auth.password),
                )
            } else {
                http.get(&realm).query(&params)
            };
            let answer = request.timeout(Duration::from_secs(60)).send().await?;
            let status = answer.status();
            let body = answer.bytes().await?;
            let refused =
                |why: String| OciDistributionError::AuthenticationFailure(format!("token endpoint {realm}: {why}"));
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BODY)])
                    .trim()
                    .to_string();
                return Err(refused(format!("{status}: {text}")));
            }
            let token: TokenResponse =
                serde_json::from_slice(&body).map_err(|e| refused(format!("answer is not a token: {e}")))?;
            let token = if token.token.is_empty() {
                token.access_token
            } else {
                token.token
            };
            if token.is_empty() {
                return Err(refused("the answer has no token".into()));
            }
            Ok(Authorization::Bearer(token))
        }
        // No credentials, or a scheme we do not speak: go on anonymously, and the
        // registry's 401 names the refusal.
        _ => Ok(Authorization::Anonymous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str, p: &str) -> AuthConfig {
        AuthConfig {
            username: u.into(),
            password: p.into(),
            ..Default::default()
        }
    }

    #[test]
    fn dockerconfigjson_entries_decode_auth_and_tokens() {
        let json = r#"{"auths": {
            "registry.example.com": {"auth": "YWxpY2U6czNjcjp0"},
            "https://index.docker.io/v1/": {"username": "bob", "password": "pw", "auth": "Ym9iMjpwdzI"},
            "quay.io": {"username": "u", "password": "p", "email": "x@y"},
            "ghcr.io": {"identitytoken": "refresh"},
            "gcr.io": {"registrytoken": "bearer"}
        }}"#;
        let entries: BTreeMap<String, AuthConfig> =
            parse_docker_config_json(json.as_bytes()).unwrap().into_iter().collect();
        // `auth` wins over username/password; the password may hold a colon; unpadded
        // base64 is accepted.
        assert_eq!(entries["registry.example.com"], user("alice", "s3cr:t"));
        assert_eq!(entries["https://index.docker.io/v1/"], user("bob2", "pw2"));
        assert_eq!(entries["quay.io"], user("u", "p"));
        assert_eq!(entries["ghcr.io"].identity_token, "refresh");
        assert_eq!(entries["gcr.io"].registry_token, "bearer");
        // The legacy format: the same entries without `auths`.
        let legacy = parse_dockercfg(br#"{"r.io": {"auth": "dTpw"}}"#).unwrap();
        assert_eq!(legacy, vec![("r.io".to_string(), user("u", "p"))]);
        for (bad, want) in [
            (&br#"{"auths": ["#[..], "not a Docker config"),
            (
                br#"{"auths": {"r.io": {"auth": "!!"}}}"#,
                "auths[\"r.io\"].auth: not base64",
            ),
            (
                br#"{"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}"#,
                "must be formatted as base64(username:password)",
            ),
            (br#"{"auths": {"r.io": "x"}}"#, "not a Docker config"),
        ] {
            let err = parse_docker_config_json(bad).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let a = AuthConfig {
            username: "alice".into(),
            password: "s3cret".into(),
            identity_token: "idtok".into(),
            registry_token: "regtok".into(),
        };
        let shown = format!(
            "{a:?} {:?} {:?}",
            Authorization::Basic("alice".into(), "s3cret".into()),
            Authorization::Bearer("tok".into())
        );
        for secret in ["s3cret", "idtok", "regtok", "tok)"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("alice"), "{shown}");
    }

    #[test]
    fn keyring_matches_as_kubelet_does() {
        let mut k = DockerKeyring::default();
        k.add(vec![
            ("https://index.docker.io/v1/".into(), user("hub", "1")),
            ("http://127.0.0.1:5000".into(), user("local", "2")),
            ("quay.io".into(), user("quay", "3")),
            ("quay.io/team".into(), user("team", "4")),
            ("*.example.com".into(), user("wild", "5")),
            ("registry.example.com:8443/v2/".into(), user("port", "6")),
        ]);
        let names = |image: &str| k.lookup(image).into_iter().map(|a| a.username).collect::<Vec<_>>();
        assert_eq!(names("docker.io/library/nginx"), ["hub"]);
        assert_eq!(names("127.0.0.1:5000/peapod/busybox"), ["local"]);
        // Another port is another registry.
        assert!(names("127.0.0.1:5001/peapod/busybox").is_empty());
        assert!(names("127.0.0.1/peapod/busybox").is_empty());
        // More specific paths first; a path is a prefix match.
        assert_eq!(names("quay.io/team/app"), ["team", "quay"]);
        assert_eq!(names("quay.io/other/app"), ["quay"]);
        // Globs match one host part each; the number of parts must be equal.
        assert_eq!(names("registry.example.com/x"), ["wild"]);
        assert!(names("a.b.example.com/x").is_empty());
        assert_eq!(names("registry.example.com:8443/x"), ["port"]);
        assert!(names("ghcr.io/x/y").is_empty());
        // `docker.io` keys match Docker Hub images directly.
        let mut k = DockerKeyring::default();
        k.add(vec![("docker.io".into(), user("d", "1"))]);
        assert_eq!(k.lookup("docker.io/library/nginx"), [user("d", "1")]);
        assert!(k.lookup("quay.io/x").is_empty());
    }

    #[test]
    fn globs_are_go_filepath_match_on_host_parts() {
        for (g, t, want) in [
            ("*", "abc", true),
            ("a*c", "abbbc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*x", "abc", false),
            ("abc", "abd", false),
            ("**", "", true),
        ] {
            assert_eq!(glob_match(g, t), want, "{g} {t}");
        }
    }

    #[test]
    fn repositories_drop_tag_and_digest() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(repository_of("docker.io/library/nginx:1.21"), "docker.io/library/nginx");
        assert_eq!(repository_of("127.0.0.1:5000/x/y:v1"), "127.0.0.1:5000/x/y");
        assert_eq!(repository_of("127.0.0.1:5000/x/y"), "127.0.0.1:5000/x/y");
        assert_eq!(
            repository_of(&format!("docker.io/library/nginx:1@{d}")),
            "docker.io/library/nginx"
        );
    }

    #[test]
    fn challenges_and_headers() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:x:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"Negotiate, Bearer realm="http://127.0.0.1:1/t""#),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
            })
        );
        assert_eq!(parse_challenge("Bearer service=x"), None);
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(basic_header("alice", "s3cr:t"), "Basic YWxpY2U6czNjcjp0");
        assert_eq!(
            Authorization::Bearer("t0k".into()).header().as_deref(),
            Some("Bearer t0k")
        );
        assert_eq!(Authorization::Anonymous.header(), None);
    }
}
