//! `kfcache cache ls | stat URI | put URI | get URI -o FILE | evict URI | clear | check`: look
//! at, manage and check what is staged in the Ignite cache.
//!
//! `put` reads from the artifact's source (S3, GCS, Azure, HTTP, file, PVC) with concurrent
//! ranged reads and stages it chunked with its manifest; `get` writes the verified bytes to a
//! file through a temporary file renamed into place. Sizes are human-readable in the table
//! output; `-o json` prints the manifests (bytes as integers).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use kfcache_ignite::Client;
use kfcache_prefetcher::{
    stage_object, IgniteSink, Manifest, ObjectCache, ObjectStoreSource, StageOptions,
};
use serde_json::json;

use crate::config::{human_size, CacheSettings, ConnectionArgs};

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the cached objects of the namespace.
    Ls(FormatArgs),
    /// Show the manifest of one cached object.
    Stat(UriArgs),
    /// Read an artifact from its source and stage it into the cache.
    Put(UriArgs),
    /// Write a cached object's verified bytes to a file.
    Get(GetArgs),
    /// Remove one object from the cache.
    Evict(UriArgs),
    /// Remove every object of the namespace from the cache.
    Clear(FormatArgs),
    /// Check that every cached object of the namespace can be read: no manifest names a
    /// missing chunk (and, with --verify, every object matches its checksums). Exits 1 when
    /// something is wrong.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also read every object back and check its checksums (this reads every byte of the
    /// namespace).
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub format: FormatArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Output format.
    #[arg(
        long = "output",
        short = 'o',
        visible_alias = "format",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct UriArgs {
    /// Artifact URI: s3://BUCKET/KEY, gs://, az://, http(s)://, file:///PATH, pvc://CLAIM/PATH.
    pub uri: String,
    #[command(flatten)]
    pub format: FormatArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// URI of the cached object.
    pub uri: String,
    /// File to write (replaced atomically).
    #[arg(long = "output", short = 'o', value_name = "FILE")]
    pub output: PathBuf,
}

/// Connects to the cluster and opens the cache the settings name.
pub async fn open_cache(settings: &CacheSettings) -> Result<ObjectCache<IgniteSink>> {
    let addresses = settings.client.addresses.join(",");
    let client = Client::connect(settings.client.clone())
        .await
        .with_context(|| {
            format!(
                "cannot reach the Ignite cluster: tried {addresses} (from {})",
                settings.addresses_origin
            )
        })?;
    let sink = IgniteSink::open(client, &settings.sink)
        .await
        .with_context(|| format!("cannot open Ignite cache {:?}", settings.sink.cache_name))?;
    Ok(ObjectCache::new(Arc::new(sink), settings.layout.clone())?)
}

pub async fn run(args: CacheArgs) -> Result<()> {
    let settings = args.connection.resolve()?;
    let cache = open_cache(&settings).await?;
    match args.command {
        CacheCommand::Ls(format) => ls(&cache, format.format).await,
        CacheCommand::Stat(args) => stat(&cache, &args.uri, args.format.format).await,
        CacheCommand::Put(args) => put(&cache, &settings, &args.uri, args.format.format).await,
        CacheCommand::Get(args) => get(&cache, &args.uri, &args.output).await,
        CacheCommand::Evict(args) => evict(&cache, &args.uri, args.format.format).await,
        CacheCommand::Clear(format) => clear(&cache, format.format).await,
        CacheCommand::Check(args) => check(&cache, args.verify, args.format.format).await,
    }
}

fn summary(manifest: &Manifest) -> serde_json::Value {
    json!({
        "uri": manifest.uri,
        "size": manifest.size,
        "chunk_size": manifest.chunk_size,
        "chunk_count": manifest.chunk_count,
        "version": manifest.version,
        "checksum_algorithm": manifest.checksum_algorithm,
        "checksum": manifest.checksum,
        "generation": manifest.generation,
        "staged_at": manifest.staged_at,
    })
}

fn print_json(value: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn ls(cache: &ObjectCache<IgniteSink>, format: OutputFormat) -> Result<()> {
    let manifests = cache.list().await?;
    if format == OutputFormat::Json {
        return print_json(&serde_json::Value::Array(
            manifests.iter().map(summary).collect(),
        ));
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["URI", "SIZE", "CHUNKS", "VERSION", "STAGED"]);
    for manifest in &manifests {
        table.add_row([
            manifest.uri.clone(),
            human_size(manifest.size),
            manifest.chunk_count.to_string(),
            manifest.version.to_string(),
            manifest
                .staged_at
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
        ]);
    }
    println!("{table}");
    let total: u64 = manifests.iter().map(|m| m.size).sum();
    println!(
        "{} object{} in namespace {:?}, {}",
        manifests.len(),
        if manifests.len() == 1 { "" } else { "s" },
        cache.config().namespace,
        human_size(total)
    );
    Ok(())
}

fn print_manifest(manifest: &Manifest) {
    println!("uri:        {}", manifest.uri);
    println!(
        "size:       {} ({} bytes)",
        human_size(manifest.size),
        manifest.size
    );
    println!(
        "chunks:     {} of {}",
        manifest.chunk_count,
        human_size(manifest.chunk_size)
    );
    println!("version:    {}", manifest.version);
    println!(
        "checksum:   {} {}",
        manifest.checksum_algorithm, manifest.checksum
    );
    println!("generation: {}", manifest.generation);
    println!("staged at:  {}", manifest.staged_at.to_rfc3339());
}

async fn stat(cache: &ObjectCache<IgniteSink>, uri: &str, format: OutputFormat) -> Result<()> {
    let Some(manifest) = cache.stat(uri).await? else {
        bail!(
            "{uri} is not in the cache (namespace {:?})",
            cache.config().namespace
        );
    };
    match format {
        OutputFormat::Json => print_json(&serde_json::to_value(&manifest)?),
        OutputFormat::Table => {
            print_manifest(&manifest);
            Ok(())
        }
    }
}

async fn put(
    cache: &ObjectCache<IgniteSink>,
    settings: &CacheSettings,
    uri: &str,
    format: OutputFormat,
) -> Result<()> {
    let source = ObjectStoreSource::new(settings.source.clone());
    let started = Instant::now();
    let manifest = stage_object(&source, cache, uri, StageOptions::default())
        .await
        .with_context(|| format!("cannot stage {uri}"))?;
    let seconds = started.elapsed().as_secs_f64();
    match format {
        OutputFormat::Json => print_json(&summary(&manifest)),
        OutputFormat::Table => {
            println!(
                "staged {uri}: {} in {} chunk{} in {seconds:.2}s ({:.1} MB/s)",
                human_size(manifest.size),
                manifest.chunk_count,
                if manifest.chunk_count == 1 { "" } else { "s" },
                manifest.size as f64 / seconds.max(1e-9) / 1e6
            );
            Ok(())
        }
    }
}

async fn get(cache: &ObjectCache<IgniteSink>, uri: &str, output: &std::path::Path) -> Result<()> {
    let manifest = cache
        .download(uri, output)
        .await
        .with_context(|| format!("cannot get {uri}"))?;
    eprintln!(
        "wrote {} ({}) to {}",
        uri,
        human_size(manifest.size),
        output.display()
    );
    Ok(())
}

async fn evict(cache: &ObjectCache<IgniteSink>, uri: &str, format: OutputFormat) -> Result<()> {
    let evicted = cache.evict(uri).await?;
    match format {
        OutputFormat::Json => print_json(&json!({ "uri": uri, "evicted": evicted })),
        OutputFormat::Table => {
            if evicted {
                println!("evicted {uri}");
            } else {
                println!("{uri} was not cached");
            }
            Ok(())
        }
    }
}

async fn clear(cache: &ObjectCache<IgniteSink>, format: OutputFormat) -> Result<()> {
    let removed = cache.clear().await?;
    let namespace = &cache.config().namespace;
    match format {
        OutputFormat::Json => print_json(&json!({ "namespace": namespace, "removed": removed })),
        OutputFormat::Table => {
            println!("removed {removed} object(s) from namespace {namespace:?}");
            Ok(())
        }
    }
}

async fn check(cache: &ObjectCache<IgniteSink>, verify: bool, format: OutputFormat) -> Result<()> {
    let report = cache
        .check(verify)
        .await
        .with_context(|| format!("cannot check namespace {:?}", cache.config().namespace))?;
    match format {
        OutputFormat::Json => print_json(&serde_json::to_value(&report)?)?,
        OutputFormat::Table => {
            println!(
                "namespace {:?}: {} object{}, {} chunk{}",
                report.namespace,
                report.manifests,
                if report.manifests == 1 { "" } else { "s" },
                report.chunks,
                if report.chunks == 1 { "" } else { "s" },
            );
            for missing in &report.missing_chunks {
                println!("missing chunk {} of {}", missing.index, missing.uri);
            }
            for uri in &report.corrupt {
                println!("corrupt: {uri} does not match its checksums");
            }
            if verify {
                println!("verified {} object(s)", report.verified);
            }
            if report.orphan_chunks > 0 {
                println!(
                    "{} chunk(s) of writes that are not current (in flight, or for the sweep)",
                    report.orphan_chunks
                );
            }
        }
    }
    if !report.ok {
        bail!(
            "cache namespace {:?} is inconsistent: {} missing chunk(s), {} corrupt object(s)",
            report.namespace,
            report.missing_chunks.len(),
            report.corrupt.len()
        );
    }
    Ok(())
}
