# SQLite categories whose fixtures have JavaScript ports (js/fixtures/db*.mjs: db.mjs,
# db_init_order.mjs, db_pragma.mjs, db_sleep.mjs, db_stress.mjs). Each runs in the one
# wasm cell of the SQLite matrix, remote: acceptance.<category>.wasm_remote.
list(APPEND KEEL_ACCEPTANCE_WASM_CATEGORIES
  actor_db:ActorDb
  actor_db_raw:ActorDbRaw
  actor_db_stress:ActorDbStress
  actor_db_init_order:ActorDbInitOrder
  actor_db_pragma_migration:ActorDbPragmaMigration
  actor_sleep_db:ActorSleepDb
)
