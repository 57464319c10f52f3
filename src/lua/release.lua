-- release: KEYS loaned holds lease
--          ARGV rid
-- Ends a hold charging nothing. Removing what is not there is a no-op, so a
-- retry cannot release twice. Returns {1 released | 0 no such hold}.
local loaned_k, holds_k, lease_k = KEYS[1], KEYS[2], KEYS[3]
local rid = ARGV[1]
if drop_hold(holds_k, lease_k, loaned_k, rid) then return {1} end
return {0}
