-- Hole 5: in INSERT ... ON CONFLICT DO UPDATE, a NULL version is "no
-- version supplied", on every path (SPEC.md section 2: ID011 in strict
-- mode, never a silent 1; auto mode bumps).
--
-- An upsert's proposed row goes through the BEFORE INSERT trigger before
-- the conflict is found, and pg_idem 0.2.0's INSERT branch has already
-- turned its NULL version into 1 when the BEFORE UPDATE trigger compares
-- EXCLUDED.version with the stored row.  So a blind upsert
--   INSERT ... VALUES (..., NULL) ON CONFLICT (id) DO UPDATE
--     SET ..., version = EXCLUDED.version
-- passes as "read at version 1": on a row at version 1 it overwrites the
-- row (version 2) -- a lost update -- and on a newer row it raises ID010
-- (version_conflict) instead of ID011 (version_required).
--
-- CORRECT outcome: in strict mode each of the three blind upserts below
-- raises ID011 and changes nothing (rows 1, 2 and 4 keep their notes at
-- versions 1, 2 and 1); in auto mode both blind upserts succeed and bump
-- the version (row 11 to 2, row 12 to 3).  The upserts that supply a
-- version and the upsert without a conflict behave as they do now.
-- With pg_idem 0.1.1: in strict mode the upserts on rows 1 and 4 succeed
-- (00000, version 2, the row overwritten) and the one on row 2 raises
-- ID010; in auto mode the upsert on row 12 raises ID010.

CREATE TABLE upn (id int PRIMARY KEY, note text NOT NULL, version int NOT NULL);
SELECT idem.enforce_version('upn');
INSERT INTO upn VALUES (1, 'one', NULL), (2, 'two', NULL), (4, 'four', NULL);
UPDATE upn SET note = 'two, edited', version = 1 WHERE id = 2;
SELECT * FROM upn ORDER BY id;

-- Strict mode, a row at version 1: a blind upsert with an explicit NULL.
INSERT INTO upn VALUES (1, 'blind', NULL)
  ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version
  RETURNING *;
\echo :SQLSTATE
-- ... and with the version column left out of the INSERT (its default is
-- NULL), which is what an ORM's upsert of a new object looks like.
INSERT INTO upn (id, note) VALUES (4, 'blind, no column')
  ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version
  RETURNING *;
\echo :SQLSTATE
-- A row at version 2.
INSERT INTO upn VALUES (2, 'blind', NULL)
  ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version
  RETURNING *;
\echo :SQLSTATE
SELECT * FROM upn ORDER BY id;

-- Unchanged by the fix: an upsert that supplies the version it read is
-- checked and bumped, and one without a conflict inserts version 1.
INSERT INTO upn VALUES (2, 'read at 2', 2)
  ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version
  RETURNING *;
INSERT INTO upn VALUES (3, 'three', NULL)
  ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version
  RETURNING *;

-- Auto mode: a blind upsert is given the next version, whatever the row's.
SELECT idem.enforce_version('upn', mode => 'auto');
INSERT INTO upn VALUES (11, 'eleven', NULL), (12, 'twelve', NULL);
UPDATE upn SET note = 'twelve, edited' WHERE id = 12 RETURNING *;
INSERT INTO upn VALUES (11, 'blind', NULL)
  ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version
  RETURNING *;
\echo :SQLSTATE
INSERT INTO upn VALUES (12, 'blind', NULL)
  ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version
  RETURNING *;
\echo :SQLSTATE
SELECT * FROM upn WHERE id > 10 ORDER BY id;

DROP TABLE upn;
