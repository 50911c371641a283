//! Who is calling: turns the bearer credential of a request (the `Authorization` header of
//! HTTP, or of a NATS message) into the [`Owner`] that scopes every read and write
//! (DESIGN.md §3 "Auth"). It knows no transport: an edge hands it the header's values. The
//! [`Authenticator`] is built once at start-up from [`AuthSettings`], so a bad keys
//! file, secret or public key stops the service before it listens, with a message
//! naming the variable. Three modes ([`AuthMode`], `AUTH_MODE`):
//!
//! - `none`: every request acts as owner `public`; any `Authorization` header is
//!   ignored (local runs, the Todo-Backend spec runner).
//! - `api-key`: `Authorization: Bearer <key>`. The keys file (`API_KEYS_FILE`) holds
//!   only SHA-256 hashes of the keys, each with its owner; see [`parse_api_keys`] for
//!   the format. A presented key is hashed and looked up.
//! - `jwt`: `Authorization: Bearer <jwt>`, signed HS256 with `JWT_SECRET` or RS256 with
//!   the RSA public key in `JWT_PUBLIC_KEY_FILE` (both may be set; the token's `alg`
//!   picks the key, and no other algorithm, `none` included, is accepted). `exp` and
//!   `sub` are required, `exp` and `nbf` are checked with `JWT_LEEWAY_S` of clock skew,
//!   `iss` must equal `JWT_ISSUER` and `aud` must contain `JWT_AUDIENCE` when those are
//!   set. The owner is `sub`.
//!
//! Failures are an [`AuthError`], which the edges turn into a 401 (HTTP adds the
//! RFC 6750 challenge from [`AuthError::www_authenticate`]). Neither the errors nor the
//! `Debug` output of anything here ever holds a token, a key or a secret.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use todo_actors::domain::Owner;

use crate::config::AuthSettings;

/// How API callers prove who they are (`AUTH_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// No authentication: every request acts as owner `public`.
    None,
    /// `Authorization: Bearer <key>`, keys from `API_KEYS_FILE`.
    ApiKey,
    /// `Authorization: Bearer <jwt>`, HS256 (`JWT_SECRET`) or RS256 (`JWT_PUBLIC_KEY_FILE`).
    Jwt,
}

/// Why a request was not authenticated. Both answer 401; the message is safe to show
/// (it never holds the credential).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header, or one with another scheme than `Bearer`
    /// (RFC 6750 §3.1: no error code then).
    #[error("authentication is required")]
    Missing,
    /// A bearer credential was sent but is not acceptable; the text says why.
    #[error("invalid credentials: {0}")]
    Invalid(&'static str),
}

impl AuthError {
    /// The `WWW-Authenticate` challenge of the 401 (RFC 6750 §3): `Bearer realm="todo"`
    /// when no credentials were sent, plus `error="invalid_token"` and an
    /// `error_description` when bad ones were.
    pub fn www_authenticate(&self) -> String {
        match self {
            Self::Missing => format!("Bearer realm=\"{REALM}\""),
            Self::Invalid(why) => format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{why}\""
            ),
        }
    }
}

/// The realm of the challenges.
const REALM: &str = "todo";

/// Checks the credentials of API requests; built once at start-up.
pub struct Authenticator {
    scheme: Scheme,
}

enum Scheme {
    None,
    ApiKey(ApiKeys),
    Jwt(Box<JwtKeys>),
}

/// SHA-256 of each key → its owner.
type ApiKeys = HashMap<[u8; 32], Owner>;

/// The keys and rules a JWT is checked with; one entry per configured algorithm.
struct JwtKeys {
    hs256: Option<(DecodingKey, Validation)>,
    rs256: Option<(DecodingKey, Validation)>,
}

/// The claims read from a JWT beyond those `jsonwebtoken` checks itself.
#[derive(Deserialize)]
struct Claims {
    /// Optional here so that a token without it fails validation as "missing sub claim"
    /// rather than as a deserialization error.
    sub: Option<String>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts and algorithms only: never a hash, a secret or a key.
        let mut d = f.debug_struct("Authenticator");
        d.field("mode", &self.mode());
        match &self.scheme {
            Scheme::None => {}
            Scheme::ApiKey(keys) => {
                d.field("api_keys", &keys.len());
            }
            Scheme::Jwt(jwt) => {
                d.field("hs256", &jwt.hs256.is_some())
                    .field("rs256", &jwt.rs256.is_some());
            }
        }
        d.finish()
    }
}

impl Authenticator {
    /// Builds the authenticator `AUTH_MODE` asks for: reads and checks `API_KEYS_FILE`
    /// or the JWT keys.
    ///
    /// # Errors
    /// A message naming the variable at fault: a required setting missing, a file that
    /// cannot be read, a keys-file line that does not parse (with its number), a
    /// `JWT_SECRET` shorter than 32 bytes, a `JWT_PUBLIC_KEY_FILE` that is not an RSA
    /// public key in PEM.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, String> {
        settings.validate()?;
        let scheme = match settings.auth_mode {
            AuthMode::None => Scheme::None,
            AuthMode::ApiKey => {
                let path = settings
                    .api_keys_file
                    .as_ref()
                    .ok_or("API_KEYS_FILE is required with AUTH_MODE=api-key")?;
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("API_KEYS_FILE: cannot read {}: {e}", path.display()))?;
                let keys = parse_api_keys(&text)
                    .map_err(|e| format!("API_KEYS_FILE: {}: {e}", path.display()))?;
                if keys.is_empty() {
                    return Err(format!(
                        "API_KEYS_FILE: {} holds no keys, so no request could pass",
                        path.display()
                    ));
                }
                Scheme::ApiKey(keys)
            }
            AuthMode::Jwt => Scheme::Jwt(Box::new(JwtKeys::from_settings(settings)?)),
        };
        Ok(Self { scheme })
    }

    /// An authenticator for `AUTH_MODE=none` (every request is owner `public`).
    pub fn none() -> Self {
        Self {
            scheme: Scheme::None,
        }
    }

    /// The mode it checks.
    pub fn mode(&self) -> AuthMode {
        match self.scheme {
            Scheme::None => AuthMode::None,
            Scheme::ApiKey(_) => AuthMode::ApiKey,
            Scheme::Jwt(_) => AuthMode::Jwt,
        }
    }

    /// The owner a request acts as, from the values of its `Authorization` header (none,
    /// one, or, wrongly, several).
    ///
    /// # Errors
    /// [`AuthError::Missing`] without a bearer credential (in `api-key` and `jwt` modes),
    /// [`AuthError::Invalid`] with a malformed, unknown, expired or badly signed one.
    pub fn authenticate<V: AsRef<[u8]>>(&self, authorization: &[V]) -> Result<Owner, AuthError> {
        match &self.scheme {
            Scheme::None => Ok(Owner::public()),
            Scheme::ApiKey(keys) => {
                let key = bearer_token(authorization)?;
                keys.get(&sha256(key))
                    .cloned()
                    .ok_or(AuthError::Invalid("unknown API key"))
            }
            Scheme::Jwt(jwt) => jwt.verify(bearer_token(authorization)?),
        }
    }
}

/// The credential of `Authorization: Bearer <token>` (RFC 6750 §2.1; the scheme is
/// case-insensitive, RFC 9110 §11.1).
fn bearer_token<V: AsRef<[u8]>>(values: &[V]) -> Result<&str, AuthError> {
    let value = match values {
        [] => return Err(AuthError::Missing),
        [one] => one.as_ref(),
        _ => return Err(AuthError::Invalid("more than one Authorization header")),
    };
    let value = std::str::from_utf8(value)
        .ok()
        .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
        .ok_or(AuthError::Invalid("malformed Authorization header"))?
        .trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, …) counts as no credentials: the challenge then tells
        // the client which scheme to use.
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Invalid("empty bearer token"));
    }
    if token.contains(char::is_whitespace) {
        return Err(AuthError::Invalid("malformed bearer token"));
    }
    Ok(token)
}

fn sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Parses the API keys file (`API_KEYS_FILE`).
///
/// Format: one key per line, `<sha256-hex-of-key> <owner>`, the two separated by
/// spaces or tabs. The hash is the 64 hex digits of the SHA-256 of the key exactly as
/// clients send it after `Bearer ` (make one with `printf %s "$KEY" | sha256sum`); the
/// owner is one word of 1 to 200 characters without control characters, and is whom
/// the key's requests act as. Several keys may share an owner (rotation); a hash may
/// appear only once. Blank lines and lines starting with `#` are ignored. The file
/// never holds the keys themselves.
///
/// ```text
/// # alice's laptop, 2026-11
/// f5b5f95affb8967c58544537a8f776fe51b4a00ca4917962547f7271bdd8b865 alice
/// 84c0931cdf6f3fcef8923d0887f30c472a3c35c73c13bead678facf816247577 ci-bot
/// ```
///
/// # Errors
/// `line N: …` for the first line that does not parse, or whose hash repeats an
/// earlier line's.
pub fn parse_api_keys(text: &str) -> Result<HashMap<[u8; 32], Owner>, String> {
    let mut keys = HashMap::new();
    let mut first_line = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hash), Some(owner), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("line {n}: expected `<sha256-hex-of-key> <owner>`"));
        };
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hash, &mut digest).map_err(|_| {
            format!("line {n}: the key hash must be 64 hex digits (the SHA-256 of the key)")
        })?;
        let owner = Owner::parse(owner).map_err(|_| {
            format!("line {n}: the owner must be 1 to 200 characters, no control characters")
        })?;
        match keys.entry(digest) {
            Entry::Occupied(_) => {
                let first = first_line.get(&digest).copied().unwrap_or_default();
                return Err(format!("line {n}: the same key hash as line {first}"));
            }
            Entry::Vacant(slot) => {
                slot.insert(owner);
                first_line.insert(digest, n);
            }
        }
    }
    Ok(keys)
}

impl JwtKeys {
    fn from_settings(settings: &AuthSettings) -> Result<Self, String> {
        let hs256 = match &settings.jwt_secret {
            Some(secret) => {
                let key = DecodingKey::from_secret(secret.expose().as_bytes())
                    .map_err(|_| "JWT_SECRET is not a usable HS256 key".to_owned())?;
                Some((key, validation(Algorithm::HS256, settings)))
            }
            None => None,
        };
        let rs256 = match &settings.jwt_public_key_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    format!("JWT_PUBLIC_KEY_FILE: cannot read {}: {e}", path.display())
                })?;
                // A private key would parse too; refuse it so it is not left on servers
                // that only verify.
                if pem
                    .windows(b"PRIVATE KEY".len())
                    .any(|w| w == b"PRIVATE KEY")
                {
                    return Err(format!(
                        "JWT_PUBLIC_KEY_FILE: {} holds a private key; give the public key \
                         (openssl rsa -in key.pem -pubout)",
                        path.display()
                    ));
                }
                let key = DecodingKey::from_rsa_pem(&pem).map_err(|_| {
                    format!(
                        "JWT_PUBLIC_KEY_FILE: {} is not an RSA public key in PEM format",
                        path.display()
                    )
                })?;
                Some((key, validation(Algorithm::RS256, settings)))
            }
            None => None,
        };
        if hs256.is_none() && rs256.is_none() {
            return Err("JWT_SECRET or JWT_PUBLIC_KEY_FILE is required with AUTH_MODE=jwt".into());
        }
        Ok(Self { hs256, rs256 })
    }

    fn verify(&self, token: &str) -> Result<Owner, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            // Also where `alg: none` and unknown algorithms end: they do not parse.
            .map_err(|_| AuthError::Invalid("malformed token"))?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or(AuthError::Invalid("token algorithm not accepted"))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| AuthError::Invalid(describe(e.kind())))?;
        let sub = data
            .claims
            .sub
            .ok_or(AuthError::Invalid("missing sub claim"))?;
        Owner::parse(sub).map_err(|_| AuthError::Invalid("sub is not a valid owner"))
    }
}

/// The rules for one algorithm: only that algorithm, `exp` and `sub` required, `exp`
/// and `nbf` checked, `iss` and `aud` required and checked when configured.
fn validation(alg: Algorithm, settings: &AuthSettings) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = settings.jwt_leeway_s;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = &settings.jwt_issuer {
        v.set_issuer(&[iss]);
        // Without this a token with no `iss` at all would pass.
        required.push("iss");
    }
    match &settings.jwt_audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// A fixed description of a JWT failure: safe for `error_description` (RFC 6750 §3:
/// no `"` or `\`), never the token or its claims.
fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => "token algorithm not accepted",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "missing exp claim",
            "sub" => "missing sub claim",
            "iss" => "missing iss claim",
            "aud" => "missing aud claim",
            _ => "missing claim",
        },
        ErrorKind::InvalidClaimFormat(_) => "malformed claim",
        _ => "malformed token",
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    use serde_json::{Value, json};

    use super::*;
    use crate::config::Secret;

    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

    /// Test key pair only (`openssl genrsa 2048`); never used outside these tests.
    const TEST_RSA_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCo+Q6/obmMtUS2
K8xX0oZ77QfLaHWJim0lgTadIU3t4pd8EcRVDwkENc47hj1X2Kfdbv0qwvvouWJQ
2DzEb5CJOazB6tLm12K4rJirYjtOYZFUIexYQW9ZMGR3tZkcBSH4r1nay9bj+kf9
v4vWPOLzy6tYVicig7FEePmdqGrb/Tq7jO/iqOCgHfZXbONstKxN/1hEA9v7nlWH
teGwOFuqyAD+jjd3V0zT/NC8H8CI8ARt8yW5gfVPdHWnW1HpBCweaNj3Vxsh5CUR
Hv0syVanFq5X+07szZin/vL0I8haNTHjlxuetuPek3R8Fb8PpV+3cJEI0mjkwatY
n70QSQdbAgMBAAECggEACxA7kfqBzp+zvwXBHGLxYT3Uy9GsGHRSzyjVrZYXpyK1
7m6vXy5b1cW8GhOhApZx70KsGtenbMZulIKEAAyZ9xIqqIu6gVjK4vKSEG6fGXOz
80FBW0n1g25ytY/TVY1UexboGDZOfKDPg+K9wio8ZeAI+QCzEUR0H9qX5WW4kWy4
4xlYE9GidBYdL45eKI6u5nlClQSfJVKYZOSsft/VZb2iMWhmfQeeA7Kh5lUcFdo9
W11iP6gB+rS3o5MxZQOcJ6flKe/0frOct4sMrykS+zjfw7L11a2rF6l8PhPplVmT
FZ1mVhq9wwZILxKmIezbhMkbcjo8XlFHzAmxEqzbkQKBgQDWgR4cb2OxAW4LOPCW
RUTdHg/hrunEOFHUmSX/kBMpi7yOf4fiNafV4HqaPzsxk78ajCr6DEKqrnFNkvH8
x3ufgK2ZGX7DQXwstWlcxy7Vr8VJlPP+WSISBug3LWW4DL/i5sXkKD+V/R+tHulR
lyMrsW+YqRjwZ5X2nKvisSLQ2QKBgQDJqRaE3mBvLJV5Eb64P23uvObebveZhrMx
6ckDnyQqVMvamZj7nznA2dD828+Xyigw10wZ9JXCny5UY7WUW6RH7pFCgGkr3kCC
lKOJPIMrGRgPtmWqJc5wximmvhUgojmuuuyLMemPhTc2MMvyD2OC+X9gGi4hLHjW
1zAaThc5UwKBgGD09d5WfxJIGiyabS0PXGQyLW2OeX3HEz3sh59vySmTTwR+Irae
GCH1mJVWFXSAWvYt+1MQ7aVmujIdRKJErN1Y9Z7pRkINvIoc6eYU5leSXrO2z17d
fSf21UnzjDHYGXf/Zd2OT8eFJadD/KRzk2MxjcbMUEiCGefhw1PxS1JpAoGAHCYa
Gpnf5CTZCHlNofJYqgZ8Q3hB35BJ2yHDCVphdfc4LV9bV2Q2b5D39xPHumxhh8/F
s6nMbcpCcU0pv3e7Sr8mT54VECaJ4rBU04c61/08upS/RCza0CsZDUljMZbzbkxx
UEy7SWlS96GAFl3HijTBbuy4m7DVfUe0UzerTjkCgYEAofvz7rcq2Aq8DpNB9fc3
GCAbwtJhL6d+MWBuNWyrgPJTY3+dRo/BNRnekUQaMM2YN6kU7n3Abps90XAu90oH
6SvMwMeX9EigVJIBGWHlsfPP4NNTOUQyDb/TkH31pTU52RJVcoU+ui79TEaQUbD4
hR838IoUKNtwgHFZjK/M+kM=
-----END PRIVATE KEY-----
";
    /// The public half of [`TEST_RSA_PRIVATE_PEM`] (`openssl rsa -pubout`).
    const TEST_RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAqPkOv6G5jLVEtivMV9KG
e+0Hy2h1iYptJYE2nSFN7eKXfBHEVQ8JBDXOO4Y9V9in3W79KsL76LliUNg8xG+Q
iTmswerS5tdiuKyYq2I7TmGRVCHsWEFvWTBkd7WZHAUh+K9Z2svW4/pH/b+L1jzi
88urWFYnIoOxRHj5nahq2/06u4zv4qjgoB32V2zjbLSsTf9YRAPb+55Vh7XhsDhb
qsgA/o43d1dM0/zQvB/AiPAEbfMluYH1T3R1p1tR6QQsHmjY91cbIeQlER79LMlW
pxauV/tO7M2Yp/7y9CPIWjUx45cbnrbj3pN0fBW/D6Vft3CRCNJo5MGrWJ+9EEkH
WwIDAQAB
-----END PUBLIC KEY-----
";

    fn settings(mode: AuthMode) -> AuthSettings {
        AuthSettings {
            auth_mode: mode,
            api_keys_file: None,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_s: 30,
        }
    }

    fn secret(s: &str) -> Secret {
        match s.parse::<Secret>() {
            Ok(secret) => secret,
            Err(never) => match never {},
        }
    }

    /// A file in the temp dir, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &str) -> Self {
            let path = std::env::temp_dir().join(format!("auth-test-{}", uuid::Uuid::now_v7()));
            std::fs::write(&path, contents).expect("temp file is writable");
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The values of an `Authorization` header.
    fn headers(authorization: Option<&str>) -> Vec<Vec<u8>> {
        authorization
            .map(|a| a.as_bytes().to_vec())
            .into_iter()
            .collect()
    }

    fn bearer(token: &str) -> Vec<Vec<u8>> {
        headers(Some(&format!("Bearer {token}")))
    }

    fn hex_sha256(key: &str) -> String {
        hex::encode(sha256(key))
    }

    fn api_key_auth(file: &TempFile) -> Result<Authenticator, String> {
        let mut s = settings(AuthMode::ApiKey);
        s.api_keys_file = Some(file.0.clone());
        Authenticator::from_settings(&s)
    }

    fn hs256_auth(configure: impl FnOnce(&mut AuthSettings)) -> Authenticator {
        let mut s = settings(AuthMode::Jwt);
        s.jwt_secret = Some(secret(SECRET));
        configure(&mut s);
        Authenticator::from_settings(&s).expect("valid jwt settings")
    }

    fn hs256_token(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &hs_key(SECRET.as_bytes()),
        )
        .expect("token encodes")
    }

    fn hs_key(secret: &[u8]) -> EncodingKey {
        EncodingKey::from_secret(secret).expect("a non-empty secret is a key")
    }

    fn now() -> i64 {
        i64::try_from(get_current_timestamp()).expect("the clock fits in i64")
    }

    fn owner(s: &str) -> Owner {
        Owner::parse(s).expect("valid owner")
    }

    #[test]
    fn none_mode_is_public_and_ignores_authorization() {
        // Arrange
        let auth = Authenticator::from_settings(&settings(AuthMode::None)).expect("builds");
        // Act / Assert
        assert_eq!(auth.mode(), AuthMode::None);
        assert_eq!(auth.authenticate(&headers(None)), Ok(Owner::public()));
        assert_eq!(auth.authenticate(&bearer("whatever")), Ok(Owner::public()));
        assert_eq!(
            auth.authenticate(&headers(Some("Basic Zm9vOmJhcg=="))),
            Ok(Owner::public())
        );
        assert_eq!(
            Authenticator::none().authenticate(&headers(None)),
            Ok(Owner::public())
        );
    }

    #[test]
    fn api_key_valid_unknown_and_missing() {
        // Arrange
        let file = TempFile::new(&format!(
            "# test keys\n{} alice\n\n{} bob\n",
            hex_sha256("alice-key-1"),
            hex_sha256("bob-key").to_uppercase()
        ));
        let auth = api_key_auth(&file).expect("keys file parses");
        // Act / Assert
        assert_eq!(auth.mode(), AuthMode::ApiKey);
        assert_eq!(
            auth.authenticate(&bearer("alice-key-1")),
            Ok(owner("alice"))
        );
        assert_eq!(auth.authenticate(&bearer("bob-key")), Ok(owner("bob")));
        assert_eq!(
            auth.authenticate(&headers(Some("bearer   bob-key  "))),
            Ok(owner("bob")),
            "the scheme is case-insensitive and spaces around the key do not count"
        );
        assert_eq!(
            auth.authenticate(&bearer("alice-key-2")),
            Err(AuthError::Invalid("unknown API key"))
        );
        assert_eq!(auth.authenticate(&headers(None)), Err(AuthError::Missing));
    }

    #[test]
    fn api_key_malformed_headers() {
        // Arrange
        let file = TempFile::new(&format!("{} alice\n", hex_sha256("k")));
        let auth = api_key_auth(&file).expect("keys file parses");
        // Act / Assert
        assert_eq!(
            auth.authenticate(&headers(Some("Basic YWxpY2U6aw=="))),
            Err(AuthError::Missing),
            "another scheme is no credentials (RFC 6750 §3.1)"
        );
        assert_eq!(
            auth.authenticate(&headers(Some("Bearer"))),
            Err(AuthError::Invalid("empty bearer token"))
        );
        assert_eq!(
            auth.authenticate(&headers(Some("Bearer   "))),
            Err(AuthError::Invalid("empty bearer token"))
        );
        assert_eq!(
            auth.authenticate(&headers(Some("Bearer k k"))),
            Err(AuthError::Invalid("malformed bearer token"))
        );
        let not_text = vec![b"Bearer \xffk".to_vec()];
        assert_eq!(
            auth.authenticate(&not_text),
            Err(AuthError::Invalid("malformed Authorization header"))
        );
        let mut twice = bearer("k");
        twice.push(b"Bearer k".to_vec());
        assert_eq!(
            auth.authenticate(&twice),
            Err(AuthError::Invalid("more than one Authorization header"))
        );
    }

    #[test]
    fn keys_file_parsing() {
        // Arrange
        let a = hex_sha256("a");
        let b = hex_sha256("b");
        let good = format!("# comment\n\n   # indented comment\n{a} alice\r\n\t{b}\tci-bot  \n");
        // Act
        let keys = parse_api_keys(&good).expect("parses");
        // Assert
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.get(&sha256("a")), Some(&owner("alice")));
        assert_eq!(keys.get(&sha256("b")), Some(&owner("ci-bot")));
        assert_eq!(parse_api_keys("").map(|k| k.len()), Ok(0));

        let bad = [
            (format!("# ok\n{a}\n"), "line 2: expected"),
            (format!("{a} alice extra\n"), "line 1: expected"),
            (
                format!("{a} alice\nnot-hex bob\n"),
                "line 2: the key hash must be 64 hex digits",
            ),
            (
                format!("{} alice\n", &a[..62]),
                "line 1: the key hash must be 64 hex digits",
            ),
            (format!("{a} al\u{1}ice\n"), "line 1: the owner must be"),
            (
                format!("{a} {}\n", "x".repeat(201)),
                "line 1: the owner must be",
            ),
            (
                format!("{a} alice\n\n{a} bob\n"),
                "line 3: the same key hash as line 1",
            ),
        ];
        for (text, expected) in bad {
            let err = parse_api_keys(&text).expect_err("bad keys file");
            assert!(
                err.starts_with(expected),
                "{err:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn keys_file_errors_name_the_variable() {
        // Arrange
        let bad = TempFile::new(&format!("{} alice\noops\n", hex_sha256("k")));
        let empty = TempFile::new("# nothing yet\n");
        let mut missing = settings(AuthMode::ApiKey);
        missing.api_keys_file = Some(PathBuf::from("/nonexistent/keys"));
        // Act / Assert
        let err = api_key_auth(&bad).expect_err("bad line");
        assert!(
            err.starts_with("API_KEYS_FILE: ")
                && err.ends_with("line 2: expected `<sha256-hex-of-key> <owner>`"),
            "{err}"
        );
        let err = api_key_auth(&empty).expect_err("no keys");
        assert!(
            err.starts_with("API_KEYS_FILE: ") && err.contains("holds no keys"),
            "{err}"
        );
        let err = Authenticator::from_settings(&missing).expect_err("unreadable");
        assert!(
            err.starts_with("API_KEYS_FILE: cannot read /nonexistent/keys"),
            "{err}"
        );
        let err = Authenticator::from_settings(&settings(AuthMode::ApiKey)).expect_err("unset");
        assert_eq!(err, "API_KEYS_FILE is required with AUTH_MODE=api-key");
    }

    #[test]
    fn jwt_settings_errors_name_the_variable() {
        // Arrange
        let short = {
            let mut s = settings(AuthMode::Jwt);
            s.jwt_secret = Some(secret("too-short"));
            s
        };
        let private = TempFile::new(TEST_RSA_PRIVATE_PEM);
        let garbage = TempFile::new("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
        let with_file = |f: &TempFile| {
            let mut s = settings(AuthMode::Jwt);
            s.jwt_public_key_file = Some(f.0.clone());
            s
        };
        // Act / Assert
        assert_eq!(
            Authenticator::from_settings(&settings(AuthMode::Jwt)).expect_err("no key"),
            "JWT_SECRET or JWT_PUBLIC_KEY_FILE is required with AUTH_MODE=jwt"
        );
        let err = Authenticator::from_settings(&short).expect_err("short secret");
        assert!(
            err.starts_with("JWT_SECRET must be at least 32 bytes"),
            "{err}"
        );
        assert!(
            !err.contains("too-short"),
            "the secret never shows in errors"
        );
        let err = Authenticator::from_settings(&with_file(&private)).expect_err("private key");
        assert!(
            err.starts_with("JWT_PUBLIC_KEY_FILE: ") && err.contains("private key"),
            "{err}"
        );
        let err = Authenticator::from_settings(&with_file(&garbage)).expect_err("not a key");
        assert!(
            err.starts_with("JWT_PUBLIC_KEY_FILE: ") && err.contains("not an RSA public key"),
            "{err}"
        );
        let mut unreadable = settings(AuthMode::Jwt);
        unreadable.jwt_public_key_file = Some(PathBuf::from("/nonexistent/key.pem"));
        let err = Authenticator::from_settings(&unreadable).expect_err("unreadable");
        assert!(err.starts_with("JWT_PUBLIC_KEY_FILE: cannot read"), "{err}");
    }

    #[test]
    fn jwt_hs256_valid() {
        // Arrange
        let auth = hs256_auth(|_| {});
        let token = hs256_token(&json!({"sub": "alice@example.com", "exp": now() + 60}));
        // Act / Assert
        assert_eq!(auth.mode(), AuthMode::Jwt);
        assert_eq!(
            auth.authenticate(&bearer(&token)),
            Ok(owner("alice@example.com"))
        );
        assert_eq!(auth.authenticate(&headers(None)), Err(AuthError::Missing));
    }

    #[test]
    fn jwt_hs256_time_checks() {
        // Arrange
        let auth = hs256_auth(|_| {});
        let expired = hs256_token(&json!({"sub": "alice", "exp": now() - 120}));
        let within_leeway = hs256_token(&json!({"sub": "alice", "exp": now() - 5}));
        let early = hs256_token(&json!({"sub": "alice", "exp": now() + 600, "nbf": now() + 300}));
        let started = hs256_token(&json!({"sub": "alice", "exp": now() + 600, "nbf": now() - 1}));
        let no_exp = hs256_token(&json!({"sub": "alice"}));
        let string_exp = hs256_token(&json!({"sub": "alice", "exp": "never"}));
        let string_nbf = hs256_token(&json!({"sub": "alice", "exp": now() + 60, "nbf": "later"}));
        // Act / Assert
        assert_eq!(
            auth.authenticate(&bearer(&expired)),
            Err(AuthError::Invalid("token expired"))
        );
        assert_eq!(
            auth.authenticate(&bearer(&within_leeway)),
            Ok(owner("alice"))
        );
        assert_eq!(
            auth.authenticate(&bearer(&early)),
            Err(AuthError::Invalid("token not valid yet (nbf)"))
        );
        assert_eq!(auth.authenticate(&bearer(&started)), Ok(owner("alice")));
        assert_eq!(
            auth.authenticate(&bearer(&no_exp)),
            Err(AuthError::Invalid("missing exp claim"))
        );
        assert!(auth.authenticate(&bearer(&string_exp)).is_err());
        assert!(auth.authenticate(&bearer(&string_nbf)).is_err());
    }

    #[test]
    fn jwt_hs256_wrong_secret_and_garbage() {
        // Arrange
        let auth = hs256_auth(|_| {});
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "alice", "exp": now() + 60}),
            &hs_key(b"another-secret-of-at-least-32-bytes!"),
        )
        .expect("token encodes");
        // Act / Assert
        assert_eq!(
            auth.authenticate(&bearer(&forged)),
            Err(AuthError::Invalid("bad signature"))
        );
        assert_eq!(
            auth.authenticate(&bearer("not.a.jwt")),
            Err(AuthError::Invalid("malformed token"))
        );
        assert_eq!(
            auth.authenticate(&bearer("nodots")),
            Err(AuthError::Invalid("malformed token"))
        );
    }

    #[test]
    fn jwt_issuer_and_audience_when_configured() {
        // Arrange
        let auth = hs256_auth(|s| {
            s.jwt_issuer = Some("https://idp.example".into());
            s.jwt_audience = Some("todo-api".into());
        });
        let exp = now() + 60;
        let token = |claims: Value| hs256_token(&claims);
        // Act / Assert
        let good =
            token(json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": "todo-api"}));
        assert_eq!(auth.authenticate(&bearer(&good)), Ok(owner("a")));
        let aud_list = token(
            json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": ["other", "todo-api"]}),
        );
        assert_eq!(auth.authenticate(&bearer(&aud_list)), Ok(owner("a")));
        let wrong_iss = token(
            json!({"sub": "a", "exp": exp, "iss": "https://evil.example", "aud": "todo-api"}),
        );
        assert_eq!(
            auth.authenticate(&bearer(&wrong_iss)),
            Err(AuthError::Invalid("wrong issuer"))
        );
        let wrong_aud =
            token(json!({"sub": "a", "exp": exp, "iss": "https://idp.example", "aud": ["other"]}));
        assert_eq!(
            auth.authenticate(&bearer(&wrong_aud)),
            Err(AuthError::Invalid("wrong audience"))
        );
        let no_iss = token(json!({"sub": "a", "exp": exp, "aud": "todo-api"}));
        assert_eq!(
            auth.authenticate(&bearer(&no_iss)),
            Err(AuthError::Invalid("missing iss claim"))
        );
        let no_aud = token(json!({"sub": "a", "exp": exp, "iss": "https://idp.example"}));
        assert_eq!(
            auth.authenticate(&bearer(&no_aud)),
            Err(AuthError::Invalid("missing aud claim"))
        );
    }

    #[test]
    fn jwt_issuer_and_audience_ignored_when_not_configured() {
        // Arrange
        let auth = hs256_auth(|_| {});
        let token = hs256_token(&json!({"sub": "a", "exp": now() + 60, "iss": "x", "aud": "y"}));
        // Act / Assert
        assert_eq!(auth.authenticate(&bearer(&token)), Ok(owner("a")));
    }

    #[test]
    fn jwt_alg_none_and_other_algorithms_are_rejected() {
        // Arrange
        let auth = hs256_auth(|_| {});
        let b64 = |v: &Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let claims = b64(&json!({"sub": "alice", "exp": now() + 60}));
        let unsigned = format!("{}.{claims}.", b64(&json!({"alg": "none", "typ": "JWT"})));
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub": "alice", "exp": now() + 60}),
            &hs_key(SECRET.as_bytes()),
        )
        .expect("token encodes");
        // Act / Assert
        assert!(matches!(
            auth.authenticate(&bearer(&unsigned)),
            Err(AuthError::Invalid(_))
        ));
        assert_eq!(
            auth.authenticate(&bearer(&hs384)),
            Err(AuthError::Invalid("token algorithm not accepted"))
        );
    }

    #[test]
    fn jwt_sub_required_and_valid() {
        // Arrange
        let auth = hs256_auth(|_| {});
        let no_sub = hs256_token(&json!({"exp": now() + 60}));
        let empty_sub = hs256_token(&json!({"sub": "", "exp": now() + 60}));
        let control_sub = hs256_token(&json!({"sub": "al\nice", "exp": now() + 60}));
        let long_sub = hs256_token(&json!({"sub": "x".repeat(201), "exp": now() + 60}));
        let number_sub = hs256_token(&json!({"sub": 42, "exp": now() + 60}));
        // Act / Assert
        assert_eq!(
            auth.authenticate(&bearer(&no_sub)),
            Err(AuthError::Invalid("missing sub claim"))
        );
        for token in [empty_sub, control_sub, long_sub] {
            assert_eq!(
                auth.authenticate(&bearer(&token)),
                Err(AuthError::Invalid("sub is not a valid owner"))
            );
        }
        assert!(auth.authenticate(&bearer(&number_sub)).is_err());
    }

    #[test]
    fn jwt_rs256() {
        // Arrange
        let public = TempFile::new(TEST_RSA_PUBLIC_PEM);
        let mut s = settings(AuthMode::Jwt);
        s.jwt_public_key_file = Some(public.0.clone());
        let auth = Authenticator::from_settings(&s).expect("public key loads");
        let private = EncodingKey::from_rsa_pem(TEST_RSA_PRIVATE_PEM.as_bytes()).expect("test key");
        let claims = json!({"sub": "bob", "exp": now() + 60});
        let token = encode(&Header::new(Algorithm::RS256), &claims, &private).expect("encodes");
        let expired = encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "bob", "exp": now() - 120}),
            &private,
        )
        .expect("encodes");
        // An HS256 token whose secret is the public key: the classic algorithm confusion.
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &hs_key(TEST_RSA_PUBLIC_PEM.as_bytes()),
        )
        .expect("encodes");
        let mut tampered = token.clone();
        tampered.replace_range(tampered.len() - 4.., "AAAA");
        // Act / Assert
        assert_eq!(auth.authenticate(&bearer(&token)), Ok(owner("bob")));
        assert_eq!(
            auth.authenticate(&bearer(&expired)),
            Err(AuthError::Invalid("token expired"))
        );
        assert_eq!(
            auth.authenticate(&bearer(&confused)),
            Err(AuthError::Invalid("token algorithm not accepted"))
        );
        assert_eq!(
            auth.authenticate(&bearer(&tampered)),
            Err(AuthError::Invalid("bad signature"))
        );
    }

    #[test]
    fn jwt_both_keys_configured_pick_by_alg() {
        // Arrange
        let public = TempFile::new(TEST_RSA_PUBLIC_PEM);
        let auth = hs256_auth(|s| s.jwt_public_key_file = Some(public.0.clone()));
        let private = EncodingKey::from_rsa_pem(TEST_RSA_PRIVATE_PEM.as_bytes()).expect("test key");
        let rs = encode(
            &Header::new(Algorithm::RS256),
            &json!({"sub": "r", "exp": now() + 60}),
            &private,
        )
        .expect("encodes");
        let hs = hs256_token(&json!({"sub": "h", "exp": now() + 60}));
        // Act / Assert
        assert_eq!(auth.authenticate(&bearer(&rs)), Ok(owner("r")));
        assert_eq!(auth.authenticate(&bearer(&hs)), Ok(owner("h")));
    }

    #[test]
    fn www_authenticate_challenges() {
        assert_eq!(
            AuthError::Missing.www_authenticate(),
            r#"Bearer realm="todo""#
        );
        assert_eq!(
            AuthError::Invalid("token expired").www_authenticate(),
            r#"Bearer realm="todo", error="invalid_token", error_description="token expired""#
        );
    }

    #[test]
    fn nothing_secret_in_debug_output() {
        // Arrange
        let file = TempFile::new(&format!("{} alice\n", hex_sha256("the-key")));
        let keys = api_key_auth(&file).expect("keys file parses");
        let mut s = settings(AuthMode::Jwt);
        s.jwt_secret = Some(secret(SECRET));
        let jwt = Authenticator::from_settings(&s).expect("builds");
        // Act
        let shown = format!("{keys:?} {jwt:?} {s:?}");
        // Assert
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(&hex_sha256("the-key")), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
