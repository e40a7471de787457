"""The fuzzer's table: one row per entity key, a sequence number per write, and a log of every row change.

``seq`` is the position of the write among the writes of its key, in the order they were produced;
``fz_effects`` logs every insert/update with the row's ``seq`` and the write id (``wid``) that made
it, so a write applied twice, a write applied that should not have been, or two writes of a key
applied out of order all show up in the log even where the final row hides them.
"""

from __future__ import annotations

FUZZ_SCHEMA = """
CREATE TABLE fz (id bigint PRIMARY KEY, seq bigint NOT NULL, note text, doc jsonb, qty int CHECK (qty >= 0),
                 wid text);
CREATE TABLE fz_effects (n bigserial PRIMARY KEY, id bigint NOT NULL, seq bigint, wid text);
CREATE FUNCTION fz_effect() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fz_effects (id, seq, wid) VALUES (NEW.id, NEW.seq, NEW.wid);
    RETURN NULL;
END $$;
CREATE TRIGGER fz_effect AFTER INSERT OR UPDATE ON fz FOR EACH ROW EXECUTE FUNCTION fz_effect();
"""

#: the ``tables`` section of the config: the allow-list the fuzzer's bad writes step outside of
FUZZ_TABLES = {"fz": {"key": ["id"], "columns": ["id", "seq", "note", "doc", "qty", "wid"]}}

TABLE = "fz"
