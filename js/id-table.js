'use strict';
// What is in flight, by the native side's id (requests, WebSockets, gRPC calls): a fixed ring of slots
// indexed by the id's low bits, and a Map for the few whose slot an older entry still holds. Ids
// are handed out in order, so entries in flight together mostly sit in distinct slots, and set,
// get and delete are an array access: no hash table grows, shrinks or rehashes as requests come
// and go (a Map of in-flight ids rebuilt its table every few requests: Runtime_MapGrow and
// Runtime_MapShrink, 3-6 % of the JS thread under a bare handler's load).
const SLOTS = 1024;
const MASK = SLOTS - 1;

class IdTable {
  constructor() {
    this.keys = new Uint32Array(SLOTS);
    this.values = new Array(SLOTS).fill(undefined);
    this.overflow = new Map();
  }

  /** The entry for `id`, or undefined. */
  get(id) {
    const slot = id & MASK;
    const value = this.values[slot];
    if (value !== undefined && this.keys[slot] === id) return value;
    return this.overflow.size === 0 ? undefined : this.overflow.get(id);
  }

  has(id) {
    return this.get(id) !== undefined;
  }

  /** Stores `value` (never undefined) for `id`. */
  set(id, value) {
    const slot = id & MASK;
    if (this.values[slot] === undefined || this.keys[slot] === id) {
      this.keys[slot] = id;
      this.values[slot] = value;
    } else {
      this.overflow.set(id, value);
    }
  }

  delete(id) {
    const slot = id & MASK;
    if (this.values[slot] !== undefined && this.keys[slot] === id) {
      this.values[slot] = undefined;
      return true;
    }
    return this.overflow.size === 0 ? false : this.overflow.delete(id);
  }
}

module.exports = { IdTable };
