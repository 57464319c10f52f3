-- release: KEYS loaned holds lease
--          ARGV rid
-- Ends a hold charging nothing. Removing what is not there is a no-op, so a
-- retry cannot release twice. Returns {1 released | 0 no such hold}.
local loaned_k, holds_k, lease_k = KEYS[1], KEYS[2], KEYS[3]
local rid = ARGV[1]
local amt = redis.call('HGET', holds_k, rid)
redis.call('ZREM', lease_k, rid)
if not amt then return {0} end
redis.call('DECRBY', loaned_k, amt)
redis.call('HDEL', holds_k, rid)
return {1}
