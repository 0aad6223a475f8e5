-- Ownership, leases and claims: what lets several instances share one store (PostgreSQL, a
-- cluster) and what one instance alone uses the same way (SQLite). Portable SQL as in 0001.
--
-- Times here are the database's clock in milliseconds since the epoch, never a host's: every
-- instance judges a lease by the same clock.

-- One row per instance holding a lease. `token` is its fencing token: each lease claimed takes a
-- new one from `fence`, and every write an instance makes is conditioned on its row still
-- holding that token unexpired, so an instance whose lease lapsed (a pause, a lost connection)
-- can no longer write once another has taken its work.
CREATE TABLE members (
    instance TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    token BIGINT NOT NULL,
    started_ms BIGINT NOT NULL,
    renewed_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);

-- The last fencing token given (one row): tokens only grow.
CREATE TABLE fence (
    id BIGINT PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO fence (id, n) VALUES (1, 0);

-- Who holds each create marker and upload in flight: the instance and the token it wrote with.
-- NULL: written before ownership existed (one instance, which adopts them at start).
ALTER TABLE uploads ADD COLUMN owner TEXT;
ALTER TABLE uploads ADD COLUMN token BIGINT;
CREATE INDEX uploads_by_owner ON uploads (owner);

-- Which instance ran each run.
ALTER TABLE runs ADD COLUMN instance TEXT;

-- Work claimed by one instance: a schedule's fire (`fire <nominal time, RFC 3339>`) or a watched
-- file's version (`file ...`), inserted once (the primary key): whoever inserts it runs it.
-- `finished_ms` NULL: claimed and not finished; `retaken` counts takeovers from a dead claimer.
CREATE TABLE claims (
    job TEXT NOT NULL,
    work TEXT NOT NULL,
    instance TEXT NOT NULL,
    token BIGINT NOT NULL,
    claimed_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    retaken BIGINT NOT NULL,
    PRIMARY KEY (job, work)
);
CREATE INDEX claims_by_age ON claims (claimed_ms);

-- The digest cache keyed by host too: a device and inode name a file on one host only. The
-- embedded store uses the empty host, so the cache of a single instance carries over.
CREATE TABLE digests_by_host (
    host TEXT NOT NULL,
    seq BIGINT NOT NULL,
    mtime_s BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    ino BIGINT NOT NULL,
    dev BIGINT NOT NULL,
    size BIGINT NOT NULL,
    ctime_s BIGINT NOT NULL,
    ctime_ns BIGINT NOT NULL,
    part_size BIGINT NOT NULL,
    multihash TEXT NOT NULL,
    md5s TEXT NOT NULL,
    PRIMARY KEY (mtime_s, mtime_ns, ino, dev, size, ctime_s, ctime_ns, part_size, host)
);
INSERT INTO digests_by_host (host, seq, mtime_s, mtime_ns, ino, dev, size, ctime_s, ctime_ns,
    part_size, multihash, md5s)
    SELECT '', seq, mtime_s, mtime_ns, ino, dev, size, ctime_s, ctime_ns, part_size, multihash, md5s
    FROM digests;
DROP TABLE digests;
ALTER TABLE digests_by_host RENAME TO digests;
CREATE INDEX digests_by_age ON digests (host, seq);
