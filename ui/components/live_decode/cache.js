// Parsed decoders kept by the browser across visits (IndexedDB, keyed by the decoder's content
// id): a returning visitor's page asks the server for no weights at all. Any failure (private
// mode, quota) only means the weights are asked for again.

const LIVE_DB = "latent-explorer-live-decode", LIVE_STORE = "decoders", LIVE_DB_KEEP = 12;

function liveOpenDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(LIVE_DB, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(LIVE_STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function liveCacheGet(id) {
  try {
    const db = await liveOpenDb();
    return await new Promise((resolve) => {
      const request = db.transaction(LIVE_STORE).objectStore(LIVE_STORE).get(id);
      request.onsuccess = () => resolve(request.result || null);
      request.onerror = () => resolve(null);
    });
  } catch (err) {
    return null;
  }
}

async function liveCachePut(id, payloadArrays) {
  try {
    const db = await liveOpenDb();
    const store = db.transaction(LIVE_STORE, "readwrite").objectStore(LIVE_STORE);
    store.put({ ...payloadArrays, savedAt: Date.now() }, id);
    const keys = store.getAllKeys(); // keep the newest LIVE_DB_KEEP decoders (2-3 MB each)
    keys.onsuccess = () => {
      if (keys.result.length <= LIVE_DB_KEEP) return;
      const all = store.getAll();
      all.onsuccess = () => {
        const byAge = keys.result.map((k, i) => [all.result[i].savedAt, k]).sort((a, b) => a[0] - b[0]);
        for (const [, k] of byAge.slice(0, byAge.length - LIVE_DB_KEEP)) store.delete(k);
      };
    };
  } catch (err) { /* not cached: asked for again next visit */ }
}
