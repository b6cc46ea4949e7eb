# SQLite categories of the acceptance suite (actors.md §8 "SQLite matrix"). Each runs in
# every native cell: one ctest entry per (category, backend), acceptance.<category>.<backend>,
# whose process starts its runtime with KEEL_SQLITE_BACKEND=<backend> (the harness reads
# KEEL_ACCEPTANCE_SQLITE_BACKEND); inside, every suite is instantiated for json, cbor and
# bare with the backend in the name: <Prefix>/<Prefix>Test.<Case>/<backend>_<encoding>.
# Same <category>:<GtestPrefix> convention as KEEL_ACCEPTANCE_CATEGORIES (see README.md).
set(KEEL_ACCEPTANCE_SQLITE_CATEGORIES
  actor_db:ActorDb
  actor_db_raw:ActorDbRaw
  actor_db_stress:ActorDbStress
  actor_db_init_order:ActorDbInitOrder
  actor_db_pragma_migration:ActorDbPragmaMigration
  actor_sleep_db:ActorSleepDb
)
# The wasm/remote cell (JavaScript actors on the wasm runtime) is listed in
# js/categories_sqlite.cmake: acceptance.<category>.wasm_remote.
set(KEEL_ACCEPTANCE_SQLITE_BACKENDS local remote)
