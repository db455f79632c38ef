// Conversations are kept in this browser only (IndexedDB), never on the server, each under the key that had it:
// a browser shared by two people shows each of them their own (a convenience, not a lock: IndexedDB is the
// browser's, readable by whoever uses it).
const DB = "homellm";
const STORE = "conversations";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1);
    request.onupgradeneeded = () => {
      const store = request.result.createObjectStore(STORE, { keyPath: "id" });
      store.createIndex("updated", "updated");
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(mode, work) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const result = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(result && "result" in result ? result.result : undefined);
      tx.onerror = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

export function newConversation(model, owner) {
  return { id: crypto.randomUUID(), owner, title: "", model, system: "", messages: [], updated: Date.now() };
}

export async function listConversations(owner) {
  const all = (await run("readonly", (s) => s.getAll())) || [];
  return all.filter((c) => c.owner === owner).sort((a, b) => b.updated - a.updated);
}

export function saveConversation(conversation) {
  conversation.updated = Date.now();
  return run("readwrite", (s) => s.put(conversation));
}

export function deleteConversation(id) {
  return run("readwrite", (s) => s.delete(id));
}
