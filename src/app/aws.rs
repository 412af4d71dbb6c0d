//! `aws provision`, `aws teardown`, `aws endpoint`: the fleet defined in AWS IoT Core — things,
//! thing type and group, certificates, the policy, the attachments — and taken down again.
//!
//! Provision is resumable and idempotent: each device's thing, certificate files and attachments
//! are checked before anything is made, so a run that was stopped continues where it stopped.
//! Registry calls are paced to `--rate` per second and retried with backoff on throttling.
//! Everything provision makes carries `createdBy=freezer-fleet` (an attribute on things and
//! groups, a tag and a description elsewhere); teardown deletes only what carries it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use rand::RngExt;
use tokio::sync::Semaphore;

use crate::aws::iot::{self, Cert, MADE_BY, MADE_BY_KEY, Registry};
use crate::aws::json::{ApiError, JsonApi};
use crate::cli::{AwsArgs, AwsCommand, ProvisionArgs, TeardownArgs};
use crate::error::{exit, io_cause};
use crate::identity::layout;
use crate::input;
use crate::ratelimit::Pacer;

/// Devices worked on at once (each waits for the pacer before every call).
const CONCURRENT_DEVICES: usize = 8;
/// Attempts of one registry call that is throttled or fails on the way.
const ATTEMPTS: u32 = 6;
/// Amazon's root CA of IoT Core's ATS endpoints, written beside the device folders.
const AMAZON_ROOT_CA1: &str = include_str!("../identity/AmazonRootCA1.pem");

pub fn run(cmd: AwsCommand) -> Result<i32> {
    match cmd {
        AwsCommand::Provision(args) => provision(*args),
        AwsCommand::Teardown(args) => teardown(*args),
        AwsCommand::Endpoint(args) => endpoint(args),
    }
}

/// The registry client for the account the credentials belong to.
async fn registry(args: &AwsArgs) -> Result<Registry> {
    let source = crate::config::aws_source_of(
        args.region.clone(),
        args.aws_profile.clone(),
        args.role_arn.clone(),
        args.external_id.clone(),
    )?;
    let session = crate::aws::credentials::session(&source).await?;
    let service = crate::aws::endpoint::IOT;
    let (url, _) = crate::aws::endpoint::url(service, &session.region)?;
    let http = crate::aws::json::http_client(None)?;
    Ok(Registry {
        api: JsonApi::new(http, url, service, "", session),
    })
}

/// One registry call, paced and retried on throttling and network errors.
async fn paced<T, F, Fut>(pacer: &Pacer, mut call: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempt = 0;
    loop {
        tokio::time::sleep_until(pacer.reserve()).await;
        match call().await {
            Err(e) if e.retryable() && attempt + 1 < ATTEMPTS => {
                attempt += 1;
                let cap = Duration::from_millis(200)
                    .saturating_mul(1 << attempt)
                    .min(Duration::from_secs(10));
                tokio::time::sleep(cap.mul_f64(rand::rng().random::<f64>())).await;
            }
            other => return other,
        }
    }
}

/// Why the registry refused, as one line for the person at the terminal.
fn refused(what: &str, e: &ApiError) -> anyhow::Error {
    match e {
        ApiError::Network(why) => {
            input!("{what}: cannot reach AWS IoT: {why}; check --region and the network")
        }
        ApiError::Service { code, .. }
            if code.contains("Unrecognized")
                || code.contains("Signature")
                || code.contains("AccessDenied")
                || code.contains("Unauthorized") =>
        {
            input!(
                "{what}: AWS refused the credentials ({e}); check them and that they may manage IoT things"
            )
        }
        _ => anyhow::anyhow!("{what}: {e}"),
    }
}

/// The default policy: exactly what the fleet does. A device may connect only with its own
/// thing name as client id, from a certificate attached to that thing, publish only to the
/// fleet's topic, and (for `run --listen`) use its own classic shadow and command topics:
/// subscribe to and receive its shadow's delta and get/accepted and its commands, publish its
/// shadow update and get requests and its command replies.
pub fn default_policy(topic: &str) -> String {
    let thing = "${iot:Connection.Thing.ThingName}";
    let shadow = |rest: &str| format!("$aws/things/{thing}/shadow/{rest}");
    let hears = [
        shadow("update/delta"),
        shadow("get/accepted"),
        format!("freezers/{thing}/cmd"),
    ];
    let says = [
        format!("arn:aws:iot:*:*:topic/{}", shadow("update")),
        format!("arn:aws:iot:*:*:topic/{}", shadow("get")),
        format!("arn:aws:iot:*:*:topic/freezers/{thing}/cmd/reply"),
    ];
    serde_json::to_string_pretty(&serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "FreezerFleetConnectAsItsThing",
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}",
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
            },
            {
                "Sid": "FreezerFleetPublishReadings",
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": format!("arn:aws:iot:*:*:topic/{topic}")
            },
            {
                "Sid": "FreezerFleetListenToItsShadowAndCommands",
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": hears.iter().map(|t| format!("arn:aws:iot:*:*:topicfilter/{t}")).collect::<Vec<_>>()
            },
            {
                "Sid": "FreezerFleetReceiveItsShadowAndCommands",
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": hears.iter().map(|t| format!("arn:aws:iot:*:*:topic/{t}")).collect::<Vec<_>>()
            },
            {
                "Sid": "FreezerFleetReportItsShadowAndReply",
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": says
            }
        ]
    }))
    .expect("JSON values serialise")
}

/// Whether a policy document is the one provision writes (its statement ids say so).
fn our_policy(document: &str) -> bool {
    document.contains("FreezerFleetConnectAsItsThing")
}

fn provision(args: ProvisionArgs) -> Result<i32> {
    let plan = Plan::check(args)?;
    super::runtime()?.block_on(async {
        let registry = registry(&plan.aws).await?;
        let pacer = Arc::new(Pacer::new(Some(plan.rate)));
        let endpoint = paced(&pacer, || registry.endpoint())
            .await
            .map_err(|e| refused("aws provision", &e))?;
        plan.prepare(&registry, &pacer).await?;
        let stop = crate::signals::Signals::new()?;
        let failures = plan.devices(&registry, &pacer, stop).await;
        let ca = plan.write_root_ca();
        let ok = plan.ids.len() - failures.len();
        eprintln!(
            "{ok} of {} device(s) provisioned in {}",
            plan.ids.len(),
            plan.out.display()
        );
        for (id, why) in &failures {
            eprintln!("  {id}: {why}");
        }
        let ca = ca.map(|p| format!(" --ca {}", p.display())).unwrap_or_default();
        eprintln!(
            "next: freezer-fleet run --endpoint {endpoint}{ca} --certs {} --topic {}",
            plan.out.display(),
            plan.topic
        );
        Ok(if failures.is_empty() {
            exit::OK
        } else {
            exit::RUN_FAILED
        })
    })
}

/// What provision will do, every input checked before the first call.
struct Plan {
    ids: Vec<String>,
    out: PathBuf,
    thing_type: Option<String>,
    thing_group: Option<String>,
    policy: String,
    document: String,
    /// The CA to sign device certificates with locally (`--certs-from-ca`).
    issuer: Option<rcgen::Issuer<'static, rcgen::KeyPair>>,
    rate: u32,
    topic: String,
    aws: AwsArgs,
}

impl Plan {
    fn check(a: ProvisionArgs) -> Result<Plan> {
        if a.devices == 0 {
            return Err(input!("--devices: 0 devices; give at least 1"));
        }
        crate::config::validate::id_prefix(&a.id_prefix, "--id-prefix")?;
        for (flag, name) in [("--thing-type", &a.thing_type), ("--thing-group", &a.thing_group)] {
            if let Some(n) = name {
                registry_name(n, flag)?;
            }
        }
        registry_name(&a.policy, "--policy")?;
        crate::config::validate::topic(&a.topic, "--topic")?;
        if a.out.is_file() {
            return Err(input!(
                "--out {}: it is a file, not a folder; give the folder the device folders go in",
                a.out.display()
            ));
        }
        let document = match &a.policy_file {
            None => default_policy(&a.topic),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    input!(
                        "--policy-file {}: cannot read: {}",
                        path.display(),
                        io_cause(&e, false)
                    )
                })?;
                serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                    input!(
                        "--policy-file {}: not JSON ({e}); give an AWS IoT policy document",
                        path.display()
                    )
                })?;
                text
            }
        };
        let issuer = match &a.certs_from_ca {
            None => None,
            Some(dir) => Some(crate::local::pki::load_issuer(
                &dir.join(crate::local::pki::CA_CERT),
                &dir.join(crate::local::pki::CA_KEY),
                "--certs-from-ca",
            )?),
        };
        if !(a.rate > 0.0 && a.rate <= 1000.0) {
            return Err(input!(
                "--rate {}: give registry calls per second, from 1 to 1000",
                a.rate
            ));
        }
        std::fs::create_dir_all(&a.out).map_err(|e| {
            input!(
                "--out {}: cannot create the folder: {}",
                a.out.display(),
                io_cause(&e, true)
            )
        })?;
        Ok(Plan {
            ids: (1..=a.devices).map(|i| format!("{}{i}", a.id_prefix)).collect(),
            out: a.out,
            thing_type: a.thing_type,
            thing_group: a.thing_group,
            policy: a.policy,
            document,
            issuer,
            rate: a.rate.ceil() as u32,
            topic: a.topic,
            aws: a.aws,
        })
    }

    /// The thing type, group and policy, made unless they exist.
    async fn prepare(&self, registry: &Registry, pacer: &Pacer) -> Result<()> {
        if let Some(t) = &self.thing_type {
            paced(pacer, || registry.ensure_thing_type(t))
                .await
                .map_err(|e| refused(&format!("--thing-type {t}"), &e))?;
        }
        if let Some(g) = &self.thing_group {
            paced(pacer, || registry.ensure_thing_group(g))
                .await
                .map_err(|e| refused(&format!("--thing-group {g}"), &e))?;
        }
        let made = paced(pacer, || registry.ensure_policy(&self.policy, &self.document))
            .await
            .map_err(|e| refused(&format!("--policy {}", self.policy), &e))?;
        if !made {
            tracing::info!("policy {} exists: attaching it as it is", self.policy);
        }
        Ok(())
    }

    /// Every device, a few at once, with a progress bar on a terminal; returns the failures.
    /// A first Ctrl-C finishes the devices under way and starts no more.
    async fn devices(
        &self,
        registry: &Registry,
        pacer: &Arc<Pacer>,
        mut stop: crate::signals::Signals,
    ) -> Vec<(String, String)> {
        let bar = indicatif::ProgressBar::new(self.ids.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} devices ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let slots = Arc::new(Semaphore::new(CONCURRENT_DEVICES));
        let mut failures = Vec::new();
        let mut under_way = futures_util::stream::FuturesUnordered::new();
        let mut next = self.ids.iter();
        let mut stopping = false;
        let mut finished = 0;
        loop {
            use futures_util::StreamExt;
            let can_start = !stopping && slots.available_permits() > 0;
            tokio::select! {
                sig = stop.recv(), if !stopping => {
                    stopping = true;
                    bar.suspend(|| eprintln!("stopping ({sig}): finishing the devices under way; run the same command again to continue"));
                }
                Some((id, result)) = under_way.next(), if !under_way.is_empty() => {
                    bar.inc(1);
                    finished += 1;
                    if let Err(e) = result {
                        failures.push((id, format!("{e:#}")));
                    }
                }
                _ = std::future::ready(()), if can_start => {
                    let Some(id) = next.next() else {
                        if under_way.is_empty() { break; }
                        stopping = true;
                        continue;
                    };
                    let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
                    let id = id.clone();
                    under_way.push(async move {
                        let result = self.device(registry, pacer, &id).await;
                        drop(permit);
                        (id, result)
                    });
                }
            }
            if stopping && under_way.is_empty() {
                break;
            }
        }
        bar.finish_and_clear();
        let left = self.ids.len() - finished;
        if left > 0 {
            failures.push((
                format!("{left} device(s)"),
                "not started: stopped before their turn".into(),
            ));
        }
        failures
    }

    /// One device: its thing, its certificate (made, or found from its files), the attachments.
    async fn device(&self, registry: &Registry, pacer: &Pacer, id: &str) -> Result<()> {
        match paced(pacer, || registry.thing_attributes(id)).await? {
            Some(attrs) if attrs[MADE_BY_KEY] != MADE_BY => {
                return Err(input!(
                    "a thing named {id} exists that freezer-fleet did not make; give another --id-prefix"
                ));
            }
            Some(_) => {}
            None => match paced(pacer, || registry.create_thing(id, self.thing_type.as_deref())).await {
                Err(e) if !iot::exists(&e) => return Err(e.into()),
                _ => {}
            },
        }
        let cert = match self.files_on_disk(id)? {
            Some(cert_id) => match paced(pacer, || registry.certificate(&cert_id)).await? {
                Some((cert, _)) => cert,
                None => {
                    return Err(input!(
                        "{}: its certificate {cert_id} is not in the registry; remove the folder to issue a new one",
                        self.out.join(id).display()
                    ));
                }
            },
            None => {
                // No files: whatever an interrupted run attached to the thing has no key on
                // this machine any more. Remove it, then make a new one.
                self.remove_principals(registry, pacer, id).await?;
                self.new_certificate(registry, pacer, id).await?
            }
        };
        let principals = paced(pacer, || registry.thing_principals(id)).await?;
        if !principals.contains(&cert.arn) {
            paced(pacer, || registry.attach_thing_principal(id, &cert.arn)).await?;
        }
        paced(pacer, || registry.attach_policy(&self.policy, &cert.arn)).await?;
        if let Some(g) = &self.thing_group {
            paced(pacer, || registry.add_to_group(g, id)).await?;
        }
        Ok(())
    }

    /// The certificate id of the files in the device's folder, when both are there.
    fn files_on_disk(&self, id: &str) -> Result<Option<String>> {
        let folder = self.out.join(id);
        let Ok(entries) = std::fs::read_dir(&folder) else {
            return Ok(None);
        };
        let names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let cert = names
            .iter()
            .find_map(|n| n.strip_suffix(&format!("-{}", layout::CERT_SUFFIX)));
        let key = names
            .iter()
            .find_map(|n| n.strip_suffix(&format!("-{}", layout::KEY_SUFFIX)));
        match (cert, key) {
            (Some(c), Some(k)) if c == k => Ok(Some(c.to_string())),
            (None, None) => Ok(None),
            _ => Err(input!(
                "{}: holds a certificate or key without its pair; remove the folder to issue a new one",
                folder.display()
            )),
        }
    }

    /// Detaches and deletes the certificates attached to thing `id` (from a run that stopped
    /// before it wrote their files).
    async fn remove_principals(&self, registry: &Registry, pacer: &Pacer, id: &str) -> Result<()> {
        for arn in paced(pacer, || registry.thing_principals(id)).await? {
            remove_certificate(registry, pacer, id, &arn).await?;
        }
        Ok(())
    }

    /// A new certificate for `id`, attached to its thing, its files written.
    async fn new_certificate(&self, registry: &Registry, pacer: &Pacer, id: &str) -> Result<Cert> {
        let (cert, pem, key) = match &self.issuer {
            Some(issuer) => {
                let (pem, key) = crate::local::pki::device_pem(issuer, id)?;
                let cert = paced(pacer, || registry.register_without_ca(&pem)).await?;
                (cert, pem, key)
            }
            None => {
                let new = paced(pacer, || registry.create_keys_and_certificate()).await?;
                (new.cert, new.pem, new.private_key)
            }
        };
        // Attached first: a certificate is never left in the registry with nothing to find it by.
        paced(pacer, || registry.attach_thing_principal(id, &cert.arn)).await?;
        let folder = self.out.join(id);
        std::fs::create_dir_all(&folder).map_err(|e| input!("{}: cannot create: {e}", folder.display()))?;
        let cert_file = folder.join(format!("{}-{}", cert.id, layout::CERT_SUFFIX));
        let key_file = folder.join(format!("{}-{}", cert.id, layout::KEY_SUFFIX));
        crate::local::pki::write_new(&key_file, &key, true)?;
        crate::local::pki::write_new(&cert_file, &pem, false)?;
        Ok(cert)
    }

    /// AmazonRootCA1.pem beside the device folders, when it can be written there.
    fn write_root_ca(&self) -> Option<PathBuf> {
        let path = self
            .out
            .parent()
            .unwrap_or(Path::new("."))
            .join("AmazonRootCA1.pem");
        if path.exists() || std::fs::write(&path, AMAZON_ROOT_CA1).is_ok() {
            Some(path)
        } else {
            None
        }
    }
}

/// Detaches a certificate from its policies and the thing, deactivates and deletes it.
async fn remove_certificate(registry: &Registry, pacer: &Pacer, thing: &str, arn: &str) -> Result<()> {
    for policy in paced(pacer, || registry.policies_of(arn)).await? {
        paced(pacer, || registry.detach_policy(&policy, arn)).await?;
    }
    paced(pacer, || registry.detach_thing_principal(thing, arn)).await?;
    if let Some(cert_id) = arn.rsplit_once("cert/").map(|(_, id)| id.to_string()) {
        match paced(pacer, || registry.delete_certificate(&cert_id)).await {
            Err(e) if !iot::not_found(&e) => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// The device folder's files of a deleted certificate (its private key is of no use any more),
/// and the folder when that leaves it empty.
fn remove_files(out: &Path, thing: &str, arn: &str) {
    let Some((_, cert_id)) = arn.rsplit_once("cert/") else {
        return;
    };
    let folder = out.join(thing);
    for suffix in [layout::CERT_SUFFIX, layout::KEY_SUFFIX] {
        let _ = std::fs::remove_file(folder.join(format!("{cert_id}-{suffix}")));
    }
    // Only when empty: remove_dir refuses a folder with anything else in it.
    let _ = std::fs::remove_dir(&folder);
}

/// Thing, type, group and policy names: 1..=128 of letters, digits, `_ - : .`.
fn registry_name(name: &str, flag: &str) -> Result<()> {
    let ok = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:.".contains(c));
    if !ok {
        return Err(input!(
            "{flag} {name}: not an AWS IoT name (1 to 128 letters, digits, _ - : .)"
        ));
    }
    Ok(())
}

fn teardown(a: TeardownArgs) -> Result<i32> {
    if a.id_prefix.is_some() && a.thing_group.is_some() {
        return Err(input!(
            "--id-prefix and --thing-group both given: choose the things by one of them"
        ));
    }
    for (flag, name) in [("--thing-type", &a.thing_type), ("--thing-group", &a.thing_group)] {
        if let Some(n) = name {
            registry_name(n, flag)?;
        }
    }
    registry_name(&a.policy, "--policy")?;
    let prefix = a.id_prefix.clone().unwrap_or_else(|| "freezer".into());
    super::runtime()?.block_on(async {
        let registry = registry(&a.aws).await?;
        let pacer = Pacer::new(Some(a.rate.ceil().max(1.0) as u32));
        let candidates = match &a.thing_group {
            Some(g) => paced(&pacer, || registry.things_in_group(g)).await,
            None => paced(&pacer, || registry.things_made_here()).await,
        }
        .map_err(|e| refused("aws teardown", &e))?;
        let mut things = Vec::new();
        for name in candidates {
            if a.thing_group.is_none() && !name.starts_with(&prefix) {
                continue;
            }
            // Only what provision made: the attribute says so.
            match paced(&pacer, || registry.thing_attributes(&name)).await? {
                Some(attrs) if attrs[MADE_BY_KEY] == MADE_BY => things.push(name),
                _ => tracing::info!("leaving {name}: freezer-fleet did not make it"),
            }
        }
        things.sort_by(|a, b| layout::natural_cmp(a, b));
        let verb = if a.dry_run { "would delete" } else { "deleting" };
        eprintln!("{verb} {} thing(s) with their certificates", things.len());
        let mut failures = Vec::new();
        for name in &things {
            if a.dry_run {
                let certs = paced(&pacer, || registry.thing_principals(name)).await?;
                println!("thing {name} ({} certificate(s))", certs.len());
                continue;
            }
            let done: Result<()> = async {
                for arn in paced(&pacer, || registry.thing_principals(name)).await? {
                    remove_certificate(&registry, &pacer, name, &arn).await?;
                    remove_files(&a.out, name, &arn);
                }
                if let Some(g) = &a.thing_group {
                    paced(&pacer, || registry.remove_from_group(g, name)).await?;
                }
                paced(&pacer, || registry.delete_thing(name)).await?;
                Ok(())
            }
            .await;
            if let Err(e) = done {
                failures.push(format!("{name}: {e:#}"));
            }
        }
        teardown_shared(&registry, &pacer, &a, &mut failures).await;
        for f in &failures {
            eprintln!("  {f}");
        }
        if !a.dry_run {
            eprintln!(
                "{} thing(s) deleted",
                things.len() - failures.iter().filter(|f| !f.starts_with("--")).count()
            );
        }
        Ok(if failures.is_empty() {
            exit::OK
        } else {
            exit::RUN_FAILED
        })
    })
}

/// The group, type and policy, when provision made them and nothing uses them any more.
async fn teardown_shared(registry: &Registry, pacer: &Pacer, a: &TeardownArgs, failures: &mut Vec<String>) {
    if let Some(g) = &a.thing_group {
        match paced(pacer, || registry.group_attributes(g)).await {
            Ok(Some(attrs)) if attrs[MADE_BY_KEY] == MADE_BY => {
                let left = paced(pacer, || registry.things_in_group(g))
                    .await
                    .unwrap_or_default();
                if a.dry_run {
                    println!("thing group {g}");
                } else if !left.is_empty() {
                    failures.push(format!(
                        "--thing-group {g}: kept, {} thing(s) still in it",
                        left.len()
                    ));
                } else if let Err(e) = paced(pacer, || registry.delete_thing_group(g)).await {
                    failures.push(format!("--thing-group {g}: {e}"));
                }
            }
            Ok(Some(_)) => tracing::info!("leaving thing group {g}: freezer-fleet did not make it"),
            Ok(None) => {}
            Err(e) => failures.push(format!("--thing-group {g}: {e}")),
        }
    }
    if let Some(t) = &a.thing_type {
        match paced(pacer, || registry.thing_type_description(t)).await {
            Ok(Some(d)) if d.contains("freezer-fleet") => {
                if a.dry_run {
                    println!("thing type {t}");
                } else if let Err(e) = paced(pacer, || registry.delete_thing_type(t)).await {
                    failures.push(format!(
                        "--thing-type {t}: deprecated, not deleted yet ({e}); AWS deletes a thing type 5 minutes \
                         after its deprecation: run teardown again then"
                    ));
                }
            }
            Ok(Some(_)) => tracing::info!("leaving thing type {t}: freezer-fleet did not make it"),
            Ok(None) => {}
            Err(e) => failures.push(format!("--thing-type {t}: {e}")),
        }
    }
    let p = &a.policy;
    match paced(pacer, || registry.policy_document(p)).await {
        Ok(Some(doc)) if our_policy(&doc) => {
            let targets = paced(pacer, || registry.policy_targets(p))
                .await
                .unwrap_or_default();
            if a.dry_run {
                println!("policy {p}");
            } else if !targets.is_empty() {
                failures.push(format!(
                    "--policy {p}: kept, still attached to {} certificate(s)",
                    targets.len()
                ));
            } else if let Err(e) = paced(pacer, || registry.delete_policy(p)).await {
                failures.push(format!("--policy {p}: {e}"));
            }
        }
        Ok(Some(_)) => tracing::info!("leaving policy {p}: freezer-fleet did not write it"),
        Ok(None) => {}
        Err(e) => failures.push(format!("--policy {p}: {e}")),
    }
}

fn endpoint(a: AwsArgs) -> Result<i32> {
    super::runtime()?.block_on(async {
        let registry = registry(&a).await?;
        let pacer = Pacer::new(Some(10));
        let endpoint = paced(&pacer, || registry.endpoint())
            .await
            .map_err(|e| refused("aws endpoint", &e))?;
        println!("{endpoint}");
        Ok(exit::OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_allows_only_what_the_fleet_does() {
        let doc: serde_json::Value = serde_json::from_str(&default_policy("freezers")).unwrap();
        let statements = doc["Statement"].as_array().unwrap();
        let actions: Vec<&str> = statements.iter().map(|s| s["Action"].as_str().unwrap()).collect();
        assert_eq!(
            actions,
            [
                "iot:Connect",
                "iot:Publish",
                "iot:Subscribe",
                "iot:Receive",
                "iot:Publish"
            ]
        );
        let me = "${iot:Connection.Thing.ThingName}";
        assert_eq!(
            statements[2]["Resource"],
            serde_json::json!([
                format!("arn:aws:iot:*:*:topicfilter/$aws/things/{me}/shadow/update/delta"),
                format!("arn:aws:iot:*:*:topicfilter/$aws/things/{me}/shadow/get/accepted"),
                format!("arn:aws:iot:*:*:topicfilter/freezers/{me}/cmd"),
            ])
        );
        assert_eq!(
            statements[4]["Resource"],
            serde_json::json!([
                format!("arn:aws:iot:*:*:topic/$aws/things/{me}/shadow/update"),
                format!("arn:aws:iot:*:*:topic/$aws/things/{me}/shadow/get"),
                format!("arn:aws:iot:*:*:topic/freezers/{me}/cmd/reply"),
            ])
        );
        assert_eq!(
            statements[0]["Resource"],
            "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"
        );
        assert_eq!(statements[1]["Resource"], "arn:aws:iot:*:*:topic/freezers");
        assert!(our_policy(&default_policy("freezers")));
        assert!(!our_policy(
            r#"{"Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_calls_are_paced_and_tried_again_and_mistakes_are_not() {
        let pacer = Pacer::new(Some(10));
        let calls = std::sync::atomic::AtomicU32::new(0);
        let throttled = || ApiError::Service {
            status: 400,
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
        };
        let t0 = tokio::time::Instant::now();
        let got = paced(&pacer, || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { if n < 2 { Err(throttled()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(got.unwrap(), 2, "the third call went through");
        assert!(
            t0.elapsed() >= Duration::from_millis(200),
            "each try waits for its slot"
        );
        let calls = std::sync::atomic::AtomicU32::new(0);
        let denied = paced(&pacer, || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                Err::<(), _>(ApiError::Service {
                    status: 403,
                    code: "AccessDeniedException".into(),
                    message: String::new(),
                })
            }
        })
        .await;
        assert!(denied.is_err());
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a refusal is not retried"
        );
    }

    #[test]
    fn the_shipped_amazon_root_ca_1_is_the_one_in_the_mozilla_roots() {
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(AMAZON_ROOT_CA1.as_bytes()).unwrap();
        let mut store = rustls::RootCertStore::empty();
        store.add(der).unwrap();
        assert!(webpki_roots::TLS_SERVER_ROOTS.contains(&store.roots[0]));
    }
}
