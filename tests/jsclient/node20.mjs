// matrix-js-sdk declares Node.js >= 22 and uses `Promise.withResolvers` (Node 22); this
// machine's Node 20 lacks only that, so provide it before the SDK is loaded (ES modules
// evaluate their imports in order). Nothing happens on Node 22 or newer.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
