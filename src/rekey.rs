//! `switchyard secrets rekey --new-key FILE` (SPEC §20): every secret sealed
//! again under a new key, offline (embedded: no server may run on the data
//! folder) or in the cluster (every node then needs the new key).
//!
//! Nothing changes unless every secret opens with the key in force. When that
//! key is the key file, the file then holds the new key; when it is
//! `SWITCHYARD_SECRETS_KEY`, the operator sets the variable to the new key.

use std::sync::Arc;

use crate::backend::SecretStore;
use crate::config::Config;
use crate::secrets::{Key, KeySource};

/// Runs the command; what to tell the operator.
pub async fn rekey(config: &Config, new_key: &std::path::Path) -> Result<String, String> {
    let (old, source) = crate::secrets::read_key(config)?.ok_or_else(|| {
        format!(
            "no key to rekey from: {} does not exist",
            crate::secrets::key_file(config).display()
        )
    })?;
    let (new, made) = match std::fs::read_to_string(new_key) {
        Ok(text) => (
            Key::parse(&text).map_err(|e| format!("{}: {e}", new_key.display()))?,
            false,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::random();
            key.write_new(new_key)?;
            (key, true)
        }
        Err(e) => return Err(format!("{}: {e}", new_key.display())),
    };
    let store: Box<dyn SecretStore> = if config.cluster.nats_url.is_empty() {
        // The folder lock: refused while a server runs on this store.
        let store = Arc::new(crate::store::Store::open(&config.data).map_err(|e| e.to_string())?);
        Box::new(crate::backend::embedded::secrets::StoreSecrets { store })
    } else {
        let node = format!("cli@{}", crate::backend::nats::hostname());
        let cluster = crate::backend::nats::Cluster::connect(&config.cluster, node).await?;
        Box::new(crate::backend::nats::secrets::NatsSecrets::open(cluster).await?)
    };
    let records = store.all().await.map_err(|e| e.to_string())?;
    // Every secret opens first, or nothing changes.
    let mut resealed = Vec::with_capacity(records.len());
    for record in &records {
        let name = record["name"].as_str().unwrap_or_default();
        let value = old.open(name, record).ok_or_else(|| {
            format!("secret {name:?} does not open with the key in {source}: nothing changed")
        })?;
        let mut next = record.clone();
        let sealed = new.seal(name, &value);
        next["nonce"] = sealed["nonce"].clone();
        next["sealed"] = sealed["sealed"].clone();
        resealed.push(next);
    }
    for record in resealed {
        store.put(record).await.map_err(|e| e.to_string())?;
    }
    let key_note = match &source {
        KeySource::File(path) => {
            new.replace(path)?;
            format!("{} now holds the new key", path.display())
        }
        KeySource::Env => format!(
            "set {} to the new key (in {})",
            crate::secrets::KEY_ENV,
            new_key.display()
        ),
    };
    let made = if made {
        format!(" (a new key, written to {})", new_key.display())
    } else {
        String::new()
    };
    let nodes = if config.cluster.nats_url.is_empty() {
        ""
    } else {
        "; every node of the cluster needs the new key"
    };
    Ok(format!(
        "re-sealed {} secret(s) under the new key{made}; {key_note}{nodes}",
        records.len()
    ))
}
