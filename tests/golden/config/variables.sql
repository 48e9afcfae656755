-- Every substitution form in WITH values.
SELECT * FROM events INTO out
WITH ('events.type' = 'file_source',
      'events.path' = '${HOME}/data/${ENVIRONMENT:-dev}/events.jsonl',
      'events.topic' = 'orders-${ENVIRONMENT:-dev}-${VERSION}',
      'events.group' = '${UNSET_GROUP:-ferris-${USER}}',
      'out.type' = 'file_sink',
      'out.path' = 'out/audit-${DATE}-${TIME}.jsonl',
      'out.note' = 'literal $${NOT_SUBSTITUTED} and $5');
