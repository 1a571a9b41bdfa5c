//! The audit writer's CPU per record: `target/release/examples/audit_probe N PAGE_SIZE`
//! appends N batches of 100 sealed `proxy.request` records (seal, chain hash, inserts, commit
//! with `synchronous = FULL`, WAL checkpoints) to a new store created with PAGE_SIZE-byte
//! SQLite pages, and prints the thread's user and system CPU time per record (getrusage) and
//! the database's bytes per record. CPU time, unlike criterion's wall time, leaves out the
//! wait for `fsync`, and is what the writer takes from the data plane on a shared host.
//! Run page sizes alternately, several times: the system time still varies with the machine.

#[path = "records.rs"]
mod records;

use sluice::admin;
use sluice::store::Store;
use sluice::vault::Keyring;

fn thread_cpu_us() -> (f64, f64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    (us(u.ru_utime), us(u.ru_stime))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(200, |a| a.parse().expect("N is a count"));
    let page: i64 = args.next().map_or(sluice::store::PAGE_SIZE, |a| {
        a.parse().expect("PAGE_SIZE is a number of bytes")
    });
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("probe.db");
    {
        // A store whose page size is set before its first write (Store::open keeps it).
        let c = rusqlite::Connection::open(&path).expect("a new database");
        c.pragma_update(None, "page_size", page).expect("page_size");
        c.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    }
    let store = Store::open(&path).expect("the store opens");
    let ring = Keyring::new(&Keyring::generate(), &[]).expect("a keyring");
    let org = admin::create_org(
        &store,
        &ring,
        &admin::Actor::cli(),
        &admin::OrgSpec {
            name: "probe".into(),
            ..admin::OrgSpec::default()
        },
        admin::Setting::On,
        None,
    )
    .expect("an org");
    let mut keys = sluice::audit::OrgKeys::new(&ring).withholding();
    let batches: Vec<Vec<_>> = (0..n)
        .map(|b| {
            (0..100)
                .map(|i| records::request_record(&org.id, b * 100 + i).bounded())
                .collect()
        })
        .collect();
    let (u0, s0) = thread_cpu_us();
    for b in &batches {
        sluice::audit::append_bounded(&store, &mut keys, b).expect("the batch is written");
    }
    let (u1, s1) = thread_cpu_us();
    let rows = (n * 100) as f64;
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len())
        + std::fs::metadata(dir.path().join("probe.db-wal")).map_or(0, |m| m.len());
    // What the records take in the database itself, once the WAL is copied in and emptied.
    let c = rusqlite::Connection::open(&path).expect("the store reopens");
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("a checkpoint");
    let db = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "page {page}: {rows} records, CPU per record {:.2} us ({:.2} user + {:.2} sys), {:.0} bytes per record ({:.0} in the database after a checkpoint)",
        (u1 - u0 + s1 - s0) / rows,
        (u1 - u0) / rows,
        (s1 - s0) / rows,
        bytes as f64 / rows,
        db as f64 / rows
    );
}
