-- Demo schema of every region database (docker-compose.yml runs it through
-- /docker-entrypoint-initdb.d on the first start of each PostgreSQL container).
-- The same tables as `regionguard demo` (regionguard_testkit.embedded.regions.DEFAULT_SCHEMA)
-- and deploy/config/compose.yaml's `tables:` allow-list.
--
-- The services create their inbox table (regionguard_applied) themselves with
-- CREATE TABLE IF NOT EXISTS, so the service user needs CREATE on the schema
-- (here it owns the database).

CREATE TABLE IF NOT EXISTS users (
    id      bigint PRIMARY KEY,
    name    text,
    email   text,
    version bigint NOT NULL          -- last-writer-wins column (tables.users.version)
);

CREATE TABLE IF NOT EXISTS orders (
    id      bigint PRIMARY KEY,
    user_id bigint,
    amount  numeric CHECK (amount >= 0),
    status  text
);
