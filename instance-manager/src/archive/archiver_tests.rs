#![allow(clippy::unwrap_used)]
use super::*;
use crate::api::StoreSpec;

const NAME: &str = "000000010000000000000007";

fn data_dir(root: &Path, content: &[u8]) -> PathBuf {
    let data = root.join("data");
    std::fs::create_dir_all(data.join("global")).unwrap();
    std::fs::create_dir_all(data.join("pg_wal/archive_status")).unwrap();
    std::fs::write(data.join("global/pg_control"), 7_u64.to_ne_bytes()).unwrap();
    std::fs::write(data.join("pg_wal").join(NAME), content).unwrap();
    data
}

fn archiver(root: &Path, data: &Path) -> Arc<Archiver> {
    let spec = StoreSpec {
        destination: format!("file://{}", root.join("archive").display()),
        s3: None,
        gcs: None,
        azure: None,
        encryption: None,
    };
    let store = crate::archive::store::open(&spec, "main", "backup.store").unwrap();
    Archiver::new(store, data, Compression::None, 2)
}

fn objects(root: &Path) -> Vec<String> {
    let dir = root.join("archive/main/wal/0000000100000000");
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_standbys_differing_copy_is_kept_beside_the_archived_one_and_a_primarys_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), b"the primary's segment");
    archiver(root.path(), &data).archive(Path::new(&format!("pg_wal/{NAME}"))).await.unwrap();

    // Another life, other bytes under the same name: a primary refuses loudly.
    std::fs::write(data.join("pg_wal").join(NAME), b"a diverged copy").unwrap();
    let e = archiver(root.path(), &data).archive(Path::new(&format!("pg_wal/{NAME}"))).await.unwrap_err();
    assert!(matches!(*e, ArchiveError::Conflict { .. }) && e.is_refusal(), "{e:?}");
    assert!(e.to_string().contains("refusing to overwrite"), "{e}");

    // A standby keeps its copy aside; the archived one is untouched.
    std::fs::write(data.join("standby.signal"), b"").unwrap();
    archiver(root.path(), &data).archive(Path::new(&format!("pg_wal/{NAME}"))).await.unwrap();
    let names = objects(root.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], NAME);
    assert!(names[1].starts_with(&format!("{NAME}.diverged-")), "{names:?}");
    let dir = root.path().join("archive/main/wal/0000000100000000");
    assert_eq!(std::fs::read(dir.join(NAME)).unwrap(), b"the primary's segment");
    assert_eq!(std::fs::read(dir.join(&names[1])).unwrap(), b"a diverged copy");
}

#[tokio::test]
async fn an_archive_that_lost_its_identity_is_refused_and_not_claimed_again() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), b"wal");
    let a = archiver(root.path(), &data);
    a.check_identity().await.unwrap();
    std::fs::remove_file(root.path().join("archive/main/cluster.json")).unwrap();
    let e = a.archive(Path::new(&format!("pg_wal/{NAME}"))).await.unwrap_err();
    assert!(matches!(*e, ArchiveError::Identity(IdentityError::Vanished { .. })), "{e:?}");
    assert!(e.to_string().contains("lost its identity"), "{e}");
    assert!(!root.path().join("archive/main/cluster.json").exists(), "the identity was claimed again");
    assert!(a.status().store_problem.is_some());
}

#[tokio::test]
async fn a_path_that_is_not_a_wal_file_in_pg_wal_is_a_bad_request_and_uploads_nothing() {
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), b"wal");
    let a = archiver(root.path(), &data);
    let e = a.archive(Path::new("pg_wal/postgresql.conf")).await.unwrap_err();
    assert!(matches!(*e, ArchiveError::NotWal { .. }) && e.is_bad_request(), "{e:?}");
    std::fs::write(root.path().join(NAME), b"wal").unwrap();
    let e = a.archive(&root.path().join(NAME)).await.unwrap_err();
    assert!(matches!(*e, ArchiveError::OutsidePgWal { .. }) && e.is_bad_request(), "{e:?}");
    assert!(e.hint().contains("%p"), "{}", e.hint());
    assert!(!root.path().join("archive/main/wal").exists(), "something was uploaded");
}

#[tokio::test]
async fn a_primarys_differing_copy_of_an_earlier_timeline_is_kept_aside_not_refused() {
    // A primary on timeline 2 (it has `00000002.history`) holds a segment of timeline 1 it
    // received as a standby; the archive has another member's copy of it.
    let root = tempfile::tempdir().unwrap();
    let data = data_dir(root.path(), b"the copy the other standby archived");
    archiver(root.path(), &data).archive(Path::new(&format!("pg_wal/{NAME}"))).await.unwrap();
    std::fs::write(data.join("pg_wal").join(NAME), b"the same WAL, another tail").unwrap();
    std::fs::write(data.join("pg_wal/00000002.history"), b"1\t0/8000000\tno recovery target specified\n").unwrap();
    archiver(root.path(), &data).archive(Path::new(&format!("pg_wal/{NAME}"))).await.unwrap();
    let names = objects(root.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[1].starts_with(&format!("{NAME}.diverged-")), "{names:?}");
    let dir = root.path().join("archive/main/wal/0000000100000000");
    assert_eq!(std::fs::read(dir.join(NAME)).unwrap(), b"the copy the other standby archived");

    // Its own timeline's segment differing is still refused.
    let own = "000000020000000000000008";
    std::fs::write(data.join("pg_wal").join(own), b"mine").unwrap();
    archiver(root.path(), &data).archive(Path::new(&format!("pg_wal/{own}"))).await.unwrap();
    std::fs::write(data.join("pg_wal").join(own), b"a split brain's").unwrap();
    let e = archiver(root.path(), &data).archive(Path::new(&format!("pg_wal/{own}"))).await.unwrap_err();
    assert!(matches!(*e, ArchiveError::Conflict { .. }), "{e:?}");
}
