//! `seckill-server token` mints a development token the server's own authenticator accepts.

use std::process::Command;

use seckill_service::{AuthConfig, AuthMode, Authenticator, JwtConfig};

const SECRET: &str = "a-development-secret-of-32-bytes-or-more";

fn token(args: &[&str], secret: Option<&str>) -> std::process::Output {
    let dir = std::env::temp_dir();
    let mut c = Command::new(env!("CARGO_BIN_EXE_seckill-server"));
    // Only the environment configures it: no config/seckill.yaml in the temporary directory.
    c.current_dir(dir)
        .env_remove("SECKILL_CONFIG")
        .arg("token")
        .args(args);
    if let Some(s) = secret {
        c.env("SECKILL_AUTH__MODE", "jwt")
            .env("SECKILL_AUTH__JWT__SECRET", s);
    }
    c.output().expect("the binary runs")
}

#[test]
fn a_minted_token_names_its_subject_and_roles() {
    let out = token(&["--sub", "2001", "--ttl", "10m"], Some(SECRET));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let buyer = String::from_utf8(out.stdout).unwrap();
    let out = token(&["--sub", "ops", "--role", "seckill:admin"], Some(SECRET));
    assert!(out.status.success());
    let admin = String::from_utf8(out.stdout).unwrap();
    let auth = Authenticator::new(&AuthConfig {
        mode: AuthMode::Jwt,
        jwt: JwtConfig {
            secret: Some(SECRET.into()),
            ..JwtConfig::default()
        },
        ..AuthConfig::default()
    })
    .unwrap();
    let b = auth
        .authenticate(Some(&format!("Bearer {}", buyer.trim())), None)
        .unwrap();
    assert_eq!(b.buyer(), Some(2001));
    assert!(!b.is_admin());
    let a = auth
        .authenticate(Some(&format!("Bearer {}", admin.trim())), None)
        .unwrap();
    assert!(a.is_admin());
}

#[test]
fn without_a_secret_or_a_subject_it_explains_and_exits_64() {
    let out = token(&["--sub", "2001"], None);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auth.jwt.secret"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = token(&[], Some(SECRET));
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sub"));
}
