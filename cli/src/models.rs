//! `kiln models`: the model registry over a repository in the lake.

use clap::Subcommand;
use kiln_engine::artifacts::{ArtifactRepo, CHAMPION, VersionRef};
use kiln_engine::{KilnSession, Master, Result};
use kiln_models::registry::{self, VersionSummary};

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// Every version with its aliases, metrics and when it was trained.
    List {
        /// The model repository (path_model_repository), a path or a URI.
        repo: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// One version in full: params, metrics, lineage, aliases.
    Show {
        repo: String,
        /// A version (`3`, `v3`) or an alias; default: the deployed version.
        #[arg(default_value = CHAMPION)]
        version: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// What differs between two versions (estimator, params, metrics,
    /// training data, features, lineage).
    Diff {
        repo: String,
        a: String,
        b: String,
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Point an alias at a version; `champion` (the default) deploys it:
    /// BatchPrediction then uses it.
    Promote {
        repo: String,
        /// A version (`3`, `v3`) or an alias naming one.
        version: String,
        #[arg(long, default_value = CHAMPION)]
        alias: String,
        /// Recorded in the repository's pointer log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deploy the version that was deployed before the current one (or
    /// `--to VERSION`).
    Rollback {
        repo: String,
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

async fn open(repo: &str) -> Result<ArtifactRepo> {
    let url = crate::synth::dir_url(repo)?;
    let session = KilnSession::connect(
        &Master::Local { partitions: 1 },
        &kiln_pipelines::extensions(),
    )
    .await?;
    ArtifactRepo::open(&session, &url)
}

fn metric(s: &VersionSummary, name: &str) -> String {
    s.metrics
        .get(name)
        .map_or("-".into(), |v| format!("{v:.4}"))
}

/// A version number; an alias is resolved in the repository.
async fn version_of(repo: &ArtifactRepo, text: &str) -> Result<u64> {
    let reference: VersionRef = text.parse()?;
    repo.resolve(&reference).await
}

pub async fn models(command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::List { repo, format } => {
            let repo = open(&repo).await?;
            let versions = registry::list(&repo).await?;
            if format == ListFormat::Json {
                return crate::print_json(&versions);
            }
            println!(
                "{:>7}  {:<22}  {:<24}  {:>12}  {:>9}  {:<24}  lineage",
                "version", "aliases", "created", "areaUnderROC", "accuracy", "estimator"
            );
            for v in &versions {
                println!(
                    "{:>7}  {:<22}  {:<24}  {:>12}  {:>9}  {:<24}  {}",
                    format!("v{}", v.version),
                    v.aliases.join(","),
                    v.created.as_deref().unwrap_or("-"),
                    metric(v, "areaUnderROC"),
                    metric(v, "accuracy"),
                    v.classname,
                    v.lineage.run_id.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        ModelsCommand::Show {
            repo,
            version,
            format,
        } => {
            let repo = open(&repo).await?;
            let summary = registry::show(&repo, &version.parse()?).await?;
            if format == ListFormat::Json {
                return crate::print_json(&summary);
            }
            println!("{}v{}", repo.base(), summary.version);
            println!("  estimator     {}", summary.classname);
            println!("  aliases       {}", summary.aliases.join(", "));
            println!(
                "  created       {}",
                summary.created.as_deref().unwrap_or("-")
            );
            println!("  training data {}", summary.training_fingerprint);
            if let Some(p) = &summary.feature_pipeline {
                println!("  features      {} v{}", p.path, p.version);
            }
            let l = &summary.lineage;
            println!(
                "  lineage       run {} task {}{}",
                l.run_id.as_deref().unwrap_or("-"),
                l.task.as_deref().unwrap_or("-"),
                l.triggered_by
                    .as_deref()
                    .map(|t| format!(", started by drift in {t}"))
                    .unwrap_or_default()
            );
            println!(
                "  drift profile {}",
                if summary.has_profile {
                    "yes"
                } else {
                    "no (older kiln)"
                }
            );
            println!("  metrics");
            for (k, v) in &summary.metrics {
                println!("    {k:<28} {v:.6}");
            }
            println!("  params        {}", summary.params);
            Ok(())
        }
        ModelsCommand::Diff { repo, a, b, format } => {
            let repo = open(&repo).await?;
            let a = registry::show(&repo, &a.parse()?).await?;
            let b = registry::show(&repo, &b.parse()?).await?;
            let differences = registry::diff(&a, &b);
            if format == ListFormat::Json {
                return crate::print_json(&differences);
            }
            println!(
                "{:<32}  {:<24}  v{}",
                "field",
                format!("v{}", a.version),
                b.version
            );
            for d in &differences {
                println!("{:<32}  {:<24}  {}", d.field, d.a.to_string(), d.b);
            }
            if differences.is_empty() {
                println!("(no differences)");
            }
            Ok(())
        }
        ModelsCommand::Promote {
            repo,
            version,
            alias,
            reason,
        } => {
            let repo = open(&repo).await?;
            let v = version_of(&repo, &version).await?;
            let previous = repo.promote(v, &alias, &reason).await?;
            println!(
                "{alias} -> v{v}{}",
                previous.map(|p| format!(" (was v{p})")).unwrap_or_default()
            );
            Ok(())
        }
        ModelsCommand::Rollback { repo, to, reason } => {
            let repo = open(&repo).await?;
            let to = match to {
                Some(text) => Some(match text.parse::<VersionRef>()? {
                    VersionRef::Version(v) => v,
                    alias => repo.resolve(&alias).await?,
                }),
                None => None,
            };
            let (from, to) = repo.rollback(to, &reason).await?;
            println!("{CHAMPION} -> v{to} (was v{from})");
            Ok(())
        }
    }
}
