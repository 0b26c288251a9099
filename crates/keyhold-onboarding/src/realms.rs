//! Data-residency realms: each names the regions a tenant's data and keys live in, one
//! root key per region. The built-in catalog follows the seeds (dual-region EU and US,
//! eight single-region realms); operators may replace it from JSON.

use keyhold_core::{ArnError, KeyArn, RealmId, Region};
use serde::Deserialize;

/// One realm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realm {
    /// Its id (`eu`, `us`, ...).
    pub id: RealmId,
    /// A human name.
    pub name: String,
    /// Its regions, home region first.
    pub regions: Vec<Region>,
}

/// The realms a platform offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmCatalog {
    realms: Vec<Realm>,
}

/// Why a catalog could not be loaded, or a realm not found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RealmError {
    /// Unknown realm id.
    #[error("unknown realm {found:?}; known realms: {known}")]
    Unknown {
        /// The id asked for.
        found: String,
        /// The ids on offer.
        known: String,
    },
    /// The catalog JSON is malformed.
    #[error("realm catalog is invalid: {0}")]
    Invalid(String),
}

/// Why a set of key ARNs does not fit a realm. Each says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    /// An ARN does not parse.
    #[error("key {index}: {source}")]
    Arn {
        /// Position in the list (1-based).
        index: usize,
        /// What is wrong with it.
        #[source]
        source: ArnError,
    },
    /// A key lives outside the realm.
    #[error(
        "key {arn} is in {region}, which is not in realm {realm} ({allowed}); create the key in one of those regions"
    )]
    RegionOutsideRealm {
        /// The key.
        arn: String,
        /// Its region.
        region: String,
        /// The realm.
        realm: String,
        /// The realm's regions.
        allowed: String,
    },
    /// Two keys for one region.
    #[error("keys {first} and {second} are both in {region}; give exactly one key per region")]
    DuplicateRegion {
        /// The region.
        region: String,
        /// The first key.
        first: String,
        /// The second key.
        second: String,
    },
    /// A region of the realm has no key.
    #[error("realm {realm} needs a key in {region} too")]
    MissingRegion {
        /// The realm.
        realm: String,
        /// The region without a key.
        region: String,
    },
}

#[derive(Deserialize)]
struct CatalogFile {
    realms: Vec<RealmFile>,
}

#[derive(Deserialize)]
struct RealmFile {
    id: String,
    name: String,
    regions: Vec<String>,
}

impl Default for RealmCatalog {
    fn default() -> Self {
        Self::builtin()
    }
}

impl RealmCatalog {
    /// The built-in catalog.
    pub fn builtin() -> Self {
        let spec: [(&str, &str, &[&str]); 10] = [
            ("eu", "European Union", &["eu-central-1", "eu-west-1"]),
            ("us", "United States", &["us-east-1", "us-west-2"]),
            ("au", "Australia", &["ap-southeast-2"]),
            ("ca", "Canada", &["ca-central-1"]),
            ("de", "Germany", &["eu-central-1"]),
            ("in", "India", &["ap-south-1"]),
            ("jp", "Japan", &["ap-northeast-1"]),
            ("kr", "South Korea", &["ap-northeast-2"]),
            ("sg", "Singapore", &["ap-southeast-1"]),
            ("uk", "United Kingdom", &["eu-west-2"]),
        ];
        let realms = spec
            .iter()
            .filter_map(|(id, name, regions)| {
                Some(Realm {
                    id: RealmId::parse(id).ok()?,
                    name: (*name).to_owned(),
                    regions: regions.iter().map(|r| Region::parse(r)).collect::<Result<_, _>>().ok()?,
                })
            })
            .collect();
        Self { realms }
    }

    /// A catalog from JSON: `{"realms": [{"id": "eu", "name": "...", "regions": ["eu-central-1", ...]}]}`.
    pub fn from_json(json: &str) -> Result<Self, RealmError> {
        let file: CatalogFile = serde_json::from_str(json).map_err(|e| RealmError::Invalid(e.to_string()))?;
        let mut realms = Vec::new();
        for r in file.realms {
            let id = RealmId::parse(&r.id).map_err(|e| RealmError::Invalid(e.to_string()))?;
            if realms.iter().any(|x: &Realm| x.id == id) {
                return Err(RealmError::Invalid(format!("realm {id} is defined twice")));
            }
            let regions: Vec<Region> = r
                .regions
                .iter()
                .map(|s| Region::parse(s).map_err(|e| RealmError::Invalid(format!("realm {id}: {e}"))))
                .collect::<Result<_, _>>()?;
            if regions.is_empty() {
                return Err(RealmError::Invalid(format!("realm {id} has no regions")));
            }
            let mut seen = std::collections::HashSet::new();
            if !regions.iter().all(|r| seen.insert(r)) {
                return Err(RealmError::Invalid(format!("realm {id} lists a region twice")));
            }
            realms.push(Realm { id, name: r.name, regions });
        }
        if realms.is_empty() {
            return Err(RealmError::Invalid("the catalog has no realms".into()));
        }
        Ok(Self { realms })
    }

    /// Every realm.
    pub fn realms(&self) -> &[Realm] {
        &self.realms
    }

    /// One realm by id.
    pub fn get(&self, id: &str) -> Result<&Realm, RealmError> {
        self.realms.iter().find(|r| r.id.as_str() == id).ok_or_else(|| RealmError::Unknown {
            found: id.to_owned(),
            known: self.realms.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

impl Realm {
    /// Parses and checks a tenant's key ARNs against this realm: each must parse, lie in
    /// one of the realm's regions, one per region, and every region must be covered.
    /// Returns the keys in realm order (home region first).
    pub fn check_keys(&self, arns: &[&str]) -> Result<Vec<KeyArn>, KeySetError> {
        let mut by_region: Vec<Option<KeyArn>> = vec![None; self.regions.len()];
        for (i, text) in arns.iter().enumerate() {
            let arn = KeyArn::parse(text).map_err(|source| KeySetError::Arn { index: i + 1, source })?;
            let Some(slot) = self.regions.iter().position(|r| r == arn.region()).and_then(|p| by_region.get_mut(p))
            else {
                return Err(KeySetError::RegionOutsideRealm {
                    arn: arn.to_string(),
                    region: arn.region().to_string(),
                    realm: self.id.to_string(),
                    allowed: self.region_list(),
                });
            };
            if let Some(first) = slot {
                return Err(KeySetError::DuplicateRegion {
                    region: arn.region().to_string(),
                    first: first.to_string(),
                    second: arn.to_string(),
                });
            }
            *slot = Some(arn);
        }
        self.regions
            .iter()
            .zip(by_region)
            .map(|(region, key)| {
                key.ok_or_else(|| KeySetError::MissingRegion { realm: self.id.to_string(), region: region.to_string() })
            })
            .collect()
    }

    fn region_list(&self) -> String {
        self.regions.iter().map(Region::as_str).collect::<Vec<_>>().join(", ")
    }
}
