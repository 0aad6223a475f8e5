-- The daemon's state, for SQLite (one host, the default) and PostgreSQL (a cluster): one SQL text
-- for both, so only portable types (TEXT, BIGINT) and no engine-specific clauses. Each record is
-- kept whole as JSON in `record` (the shape the JSON files of earlier releases held); the other
-- columns are the keys the daemon queries by, and what an operator reads with sqlite3 or psql.
--
-- What crash safety rests on, one row per create: written before the create is sent (a create
-- marker: `upload_id` NULL, so that if the answer is lost, an upload in progress of this target
-- with this multihash is ours), then turned into the upload's record when the answer comes
-- (before any part is sent), deleted when the upload is completed or aborted. A row changes in
-- place: one page written per step.
CREATE TABLE uploads (
    target TEXT NOT NULL,        -- collection/item/asset
    multihash TEXT NOT NULL,     -- lower case
    upload_id TEXT,              -- NULL: a create sent, its answer not seen
    job TEXT,
    at TEXT NOT NULL,            -- RFC 3339, UTC: the create sent, or the upload created
    pid BIGINT,                  -- the daemon that created the upload
    record TEXT NOT NULL         -- the marker or the upload, as JSON
);

-- The create markers alone, for reading.
CREATE VIEW create_markers AS
    SELECT target, multihash, at, record FROM uploads WHERE upload_id IS NULL;

-- The last runs of each job (`seq` counts up per job; the oldest beyond the limit are deleted
-- in the transaction that adds a run).
CREATE TABLE runs (
    job TEXT NOT NULL,
    seq BIGINT NOT NULL,
    finished TEXT NOT NULL,
    outcome TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (job, seq)
);

-- The digest cache: a file as stat'ed and a part size -> its multihash and part MD5s. The key
-- starts with the mtime, so new files land at the end of the index, as `seq` does; the oldest
-- `seq` beyond the limit are deleted in the transaction that adds.
CREATE TABLE digests (
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
    md5s TEXT NOT NULL,          -- base64 MD5 of each part, space-separated; empty: multihash only
    PRIMARY KEY (mtime_s, mtime_ns, ino, dev, size, ctime_s, ctime_ns, part_size)
);
CREATE INDEX digests_by_age ON digests (seq);

-- Facts about the store itself (e.g. when the JSON files of an earlier release were imported).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
