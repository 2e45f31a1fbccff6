-- An ordinary sqlite3 session for the preload tests: build a database of
-- more than 100 MB with a recursive CTE, index it, query it. Run natively and
-- under libuhmm_preload.so it must print the same lines.
--
-- Every value is a function of the row number (no random(), no
-- randomblob(), no time), so the output and the file are deterministic. The
-- 64 MiB page cache and the index build's sorter are large malloc'd blocks:
-- managed memory under the preload.
PRAGMA page_size = 4096;
PRAGMA cache_size = -65536;
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
PRAGMA temp_store = MEMORY;

CREATE TABLE items(
  id INTEGER PRIMARY KEY,
  k INTEGER NOT NULL,
  tag TEXT NOT NULL,
  body TEXT NOT NULL,
  payload BLOB NOT NULL
);

-- 180000 rows of about 470 bytes each; with the two indexes the file is about 115 MB.
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 180000)
INSERT INTO items(id, k, tag, body, payload)
SELECT x,
       (x * 2654435761) % 1000003,
       printf('t%05d', (x * 40503) % 65536),
       printf('%s-%08x-%s', substr('alphabravocharliedeltaechofoxtrotgolfhotel', 1 + x % 30, 12),
              (x * 97) % 4294967291, replace(printf('%0*d', 40 + x % 60, x), '0', char(97 + x % 26))),
       CAST(replace(printf('%0*d', 360, x % 1000003), '0', char(65 + (x * 7) % 26)) AS BLOB)
FROM n;

CREATE INDEX items_k ON items(k, tag);
CREATE INDEX items_tag ON items(tag, body);

SELECT 'rows', count(*), sum(k), sum(length(body)), sum(length(payload)) FROM items;
SELECT 'groups', k % 7 AS g, count(*), sum(id), min(tag), max(tag), max(body) FROM items GROUP BY g ORDER BY g;
SELECT 'range', count(*), sum(id), total(length(payload)) FROM items WHERE k BETWEEN 1000 AND 250000;
SELECT 'tags', tag, count(*), sum(k) FROM items GROUP BY tag ORDER BY count(*) DESC, tag LIMIT 5;
SELECT 'join', count(*), sum(a.id - b.id) FROM items a JOIN items b ON b.id = a.id + 1 WHERE a.k < b.k;
SELECT 'ordered', id, k, tag FROM items ORDER BY body DESC, id LIMIT 3;
SELECT 'integrity', integrity_check FROM pragma_integrity_check;
SELECT 'pages', page_count * page_size >= 100000000 FROM pragma_page_count, pragma_page_size;
