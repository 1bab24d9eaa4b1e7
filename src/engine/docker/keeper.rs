//! Memory-backed secret volumes on a region's own engine, and the keeper containers that
//! hold them mounted.
//!
//! A `local` volume of `type=tmpfs` keeps its files only while some container has it
//! mounted: the engine mounts it on first use and unmounts it (its files gone) at the last.
//! So each one gets a *keeper*: a container of a tiny image (one static program that
//! blocks forever, imported through the engine's API, no registry) that mounts the volume,
//! runs with no network, no capabilities, a read-only root and a few MiB of memory, and is
//! killed when removed. The files go in through the archive API of the running keeper: a
//! tar made in memory whose headers carry each file's owner and mode. Nothing decrypted is
//! written to a disk, on this machine or on the engine's host.

use std::collections::HashMap;

use futures_util::StreamExt;
use zeroize::Zeroizing;

use super::{Engine, EngineError};

/// The repository the keeper image is imported under; its tag is a digest of its program.
pub const KEEPER_REPO: &str = "berth-keeper";

/// Where the keeper mounts the volume it holds.
const KEEPER_MOUNT: &str = "/secrets";

/// The keeper's program, in its image.
const KEEPER_PROGRAM: &str = "/keeper";

/// Where the ELF's single segment is loaded.
const LOAD_ADDRESS: u64 = 0x40_0000;

/// x86_64: `loop: mov eax, 34 (pause); syscall; jmp loop`.
const X86_64_CODE: [u8; 9] = [0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7];

/// aarch64: `loop: movz x8, #73 (ppoll); movz x0..x3, #0; svc #0; b loop`.
const AARCH64_CODE: [u32; 7] = [
    0xd280_0928, // movz x8, #73
    0xd280_0000, // movz x0, #0
    0xd280_0001, // movz x1, #0
    0xd280_0002, // movz x2, #0
    0xd280_0003, // movz x3, #0
    0xd400_0001, // svc #0
    0x17ff_fffa, // b loop (-6 instructions)
];

/// The architectures a keeper program exists for, as the engine's `/info` names them.
pub const KEEPER_ARCHITECTURES: [&str; 2] = ["x86_64", "aarch64"];

/// A static ELF executable that blocks until killed, for an engine's architecture (as its
/// `/info` says: `x86_64`, `aarch64`; `amd64` and `arm64` too); `None` for any other.
pub fn keeper_program(architecture: &str) -> Option<Vec<u8>> {
    let (machine, code): (u16, Vec<u8>) = match architecture {
        "x86_64" | "amd64" => (62, X86_64_CODE.to_vec()),
        "aarch64" | "arm64" => (
            183,
            AARCH64_CODE.iter().flat_map(|i| i.to_le_bytes()).collect(),
        ),
        _ => return None,
    };
    const EHSIZE: u16 = 64;
    const PHENTSIZE: u16 = 56;
    let header_len = u64::from(EHSIZE) + u64::from(PHENTSIZE);
    let size = header_len + code.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // ELF header: 64-bit, little-endian, version 1, System V ABI.
    elf.extend_from_slice(b"\x7fELF");
    elf.extend_from_slice(&[2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    elf.extend_from_slice(&(LOAD_ADDRESS + header_len).to_le_bytes()); // entry
    elf.extend_from_slice(&u64::from(EHSIZE).to_le_bytes()); // program headers' offset
    elf.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&EHSIZE.to_le_bytes());
    elf.extend_from_slice(&PHENTSIZE.to_le_bytes());
    elf.extend_from_slice(&1u16.to_le_bytes()); // one program header
    elf.extend_from_slice(&[0; 6]); // no section headers, no names
    // One PT_LOAD segment, read and execute: the whole file.
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&5u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // offset
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // vaddr
    elf.extend_from_slice(&LOAD_ADDRESS.to_le_bytes()); // paddr
    elf.extend_from_slice(&size.to_le_bytes()); // file size
    elf.extend_from_slice(&size.to_le_bytes()); // memory size
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // alignment
    elf.extend_from_slice(&code);
    Some(elf)
}

/// The keeper image's tag for a program: `berth-keeper:` and a digest of it.
pub fn keeper_image_tag(program: &[u8]) -> String {
    format!(
        "{KEEPER_REPO}:{}",
        &crate::encode::sha256_hex(program)[..16]
    )
}

/// Why no keeper can run on an engine.
#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error(
        "the engine of region `{region}` runs on `{architecture}`, for which berth has no secrets keeper (it has one for {})",
        KEEPER_ARCHITECTURES.join(", ")
    )]
    Architecture {
        region: String,
        architecture: String,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// One decrypted file for a secrets volume.
pub struct VolumeFile<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
    pub mode: u32,
}

/// A tar, in memory only, of `files` owned by `uid:gid` with their modes. Zeroed when
/// dropped; sized up front, so that no reallocation leaves a copy behind.
fn secrets_tar(
    files: &[VolumeFile<'_>],
    uid: u32,
    gid: u32,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let size: usize = files
        .iter()
        .map(|f| 512 + f.bytes.len().div_ceil(512) * 512)
        .sum::<usize>()
        + 1024;
    let mut out = Zeroizing::new(Vec::with_capacity(size));
    {
        let mut builder = tar::Builder::new(&mut *out);
        for f in files {
            let mut header = tar::Header::new_ustar();
            header.set_path(f.name)?;
            header.set_size(f.bytes.len() as u64);
            header.set_mode(f.mode);
            header.set_uid(u64::from(uid));
            header.set_gid(u64::from(gid));
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            builder.append(&header, f.bytes)?;
        }
        builder.finish()?;
    }
    Ok(out)
}

impl Engine {
    /// The engine's architecture (`Architecture` of its `/info`).
    pub async fn architecture(&self) -> Result<String, EngineError> {
        Ok(self.identity().await?.architecture.clone())
    }

    /// The keeper image for this engine's architecture, imported (from a tar made in
    /// memory, through the API: no registry) unless it is there already; its tag.
    pub async fn keeper_image(&self) -> Result<String, KeeperError> {
        let architecture = self.architecture().await?;
        let program = keeper_program(&architecture).ok_or_else(|| KeeperError::Architecture {
            region: self.region.clone(),
            architecture: architecture.clone(),
        })?;
        let tag = keeper_image_tag(&program);
        if self.image_present(&tag).await? {
            return Ok(tag);
        }
        let failed = |reason: String| EngineError::Call {
            region: self.region.clone(),
            call: "import the secrets keeper image",
            reason,
        };
        let rootfs = keeper_rootfs(&program).map_err(|e| failed(e.to_string()))?;
        let (repo, version) = tag.split_once(':').unwrap_or((KEEPER_REPO, "latest"));
        let options = bollard::query_parameters::CreateImageOptions {
            from_src: Some("-".to_owned()),
            repo: Some(repo.to_owned()),
            tag: Some(version.to_owned()),
            ..Default::default()
        };
        let _request = self.request("keeper_image");
        let mut stream =
            self.docker
                .create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        return Err(failed(detail.message.unwrap_or_default()).into());
                    }
                }
                Err(e) => return Err(failed(e.to_string()).into()),
            }
        }
        Ok(tag)
    }

    /// Creates a memory-backed (tmpfs) volume: its root owned by `uid:gid`, mode 0500,
    /// `size` bytes at most.
    pub async fn create_secrets_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        (uid, gid): (u32, u32),
        size: u64,
    ) -> Result<(), EngineError> {
        let request = bollard::models::VolumeCreateRequest {
            name: Some(name.to_owned()),
            driver: Some("local".to_owned()),
            driver_opts: Some(HashMap::from([
                ("type".to_owned(), "tmpfs".to_owned()),
                ("device".to_owned(), "tmpfs".to_owned()),
                (
                    "o".to_owned(),
                    format!("size={size},mode=0500,uid={uid},gid={gid}"),
                ),
            ])),
            labels: Some(self.with_region(labels)),
            ..Default::default()
        };
        self.retrying("create_secrets_volume", || {
            self.docker.create_volume(request.clone())
        })
        .await
        .map_err(|e| self.call_error("create volume", e))?;
        Ok(())
    }

    /// Creates (not started) the keeper of a secrets volume: it mounts the volume
    /// read-write, has no network, no capabilities, a read-only root, 8 MiB of memory, is
    /// never restarted by the engine, and dies at once when stopped.
    pub async fn create_keeper(
        &self,
        name: &str,
        image: &str,
        volume: &str,
        labels: HashMap<String, String>,
    ) -> Result<String, EngineError> {
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: Some(vec![KEEPER_PROGRAM.to_owned()]),
            user: Some("65534:65534".to_owned()),
            labels: Some(labels),
            network_disabled: Some(true),
            stop_signal: Some("SIGKILL".to_owned()),
            stop_timeout: Some(0),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some("none".to_owned()),
                cap_drop: Some(vec!["ALL".to_owned()]),
                readonly_rootfs: Some(true),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                memory: Some(8 << 20),
                pids_limit: Some(4),
                restart_policy: Some(bollard::models::RestartPolicy {
                    name: Some(bollard::models::RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                mounts: Some(vec![secrets_mount(volume, KEEPER_MOUNT, false)]),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_container(name, body).await
    }

    /// Puts `files` (owned by `uid:gid`, each with its mode) into the secrets volume the
    /// running keeper `id` holds, in one archive made in memory.
    pub async fn fill_secrets_volume(
        &self,
        keeper: &str,
        files: &[VolumeFile<'_>],
        (uid, gid): (u32, u32),
    ) -> Result<(), EngineError> {
        let archive = secrets_tar(files, uid, gid).map_err(|e| EngineError::Call {
            region: self.region.clone(),
            call: "upload to container",
            reason: format!("cannot pack the secret files: {e}"),
        })?;
        let body = futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(hyper::body::Bytes::from_owner(archive))
        });
        self.upload(keeper, KEEPER_MOUNT, body).await
    }
}

/// A secrets volume mounted at `target` (never filled from the image: nothing is copied
/// into it when it is first mounted).
pub fn secrets_mount(volume: &str, target: &str, read_only: bool) -> bollard::models::Mount {
    bollard::models::Mount {
        target: Some(target.to_owned()),
        source: Some(volume.to_owned()),
        typ: Some(bollard::models::MountType::VOLUME),
        read_only: Some(read_only),
        volume_options: Some(bollard::models::MountVolumeOptions {
            no_copy: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The keeper image's root filesystem: its program alone, mode 0555.
fn keeper_rootfs(program: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_path(KEEPER_PROGRAM.trim_start_matches('/'))?;
    header.set_size(program.len() as u64);
    header.set_mode(0o555);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    builder.append(&header, program)?;
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeper_programs_are_elf_executables_for_their_machine() {
        for (arch, machine) in [("x86_64", 62u16), ("aarch64", 183)] {
            let elf = keeper_program(arch).unwrap();
            assert_eq!(&elf[..4], b"\x7fELF");
            assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), machine);
            let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
            assert_eq!(entry, LOAD_ADDRESS + 120);
            let filesz = u64::from_le_bytes(elf[96..104].try_into().unwrap());
            assert_eq!(filesz, elf.len() as u64);
        }
        assert!(keeper_program("s390x").is_none());
        let a = keeper_image_tag(&keeper_program("x86_64").unwrap());
        let b = keeper_image_tag(&keeper_program("aarch64").unwrap());
        assert!(a.starts_with("berth-keeper:") && a != b);
    }

    #[test]
    fn the_secrets_tar_carries_owner_and_mode() {
        let files = [VolumeFile {
            name: "db",
            bytes: b"value",
            mode: 0o400,
        }];
        let tar = secrets_tar(&files, 1000, 50).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entries = archive.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.header().mode().unwrap(), 0o400);
        assert_eq!(e.header().uid().unwrap(), 1000);
        assert_eq!(e.header().gid().unwrap(), 50);
        assert_eq!(e.path().unwrap().to_str(), Some("db"));
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        assert_eq!(body, b"value");
    }
}
