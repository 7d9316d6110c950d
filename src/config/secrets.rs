//! Files holding secrets (the bucket's keys, the parent's password): TOML,
//! readable by their owner only, each named field a non-empty string.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The `names` fields of the TOML file at `path` (config key `key`), in
/// order; refused when group or others may read the file.
pub fn secret_fields<const N: usize>(
    path: &Path,
    key: &str,
    names: [&str; N],
) -> Result<[String; N], String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{key} {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{key} {shown} is readable by group or others (mode {mode:04o}): chmod 600 {shown}"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{key} {shown}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|_| format!("{key} {shown} is not TOML"))?;
    let field = |name: &str| {
        table
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let found: Vec<String> = names.iter().filter_map(|name| field(name)).collect();
    found
        .try_into()
        .map_err(|_| format!("{key} {shown} needs {}", names.join(" and ")))
}
