-- A missing variable fails at start-up, naming it and where it was used.
SELECT * FROM events WITH ('events.type' = 'file_source', 'events.path' = '/data/${NOT_SET_ANYWHERE}.jsonl');
SELECT * FROM events WITH ('events.type' = 'file_source', 'events.path' = '${DATA_DIR:?set DATA_DIR to the input folder}');
SELECT * FROM events WITH ('events.type' = 'file_source', 'events.config_file' = 'configs/does-not-exist.yaml');
