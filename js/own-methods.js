'use strict';
// Copies methods onto an object as own properties (js/request.js, js/response.js: objects that
// survive a framework swapping their prototype).

/**
 * A function that stores `methods` (`[name, fn]` pairs) on its argument, one named store each.
 * Generated rather than looped: V8 turns an object into a slow dictionary after a dozen or so
 * properties added with computed keys (`obj[name] = fn`), but not with named stores, which also
 * share one hidden-class chain across every instance.
 */
function ownMethodsAssigner(methods) {
  for (const [name] of methods) {
    if (!/^[A-Za-z_$][\w$]*$/.test(name)) throw new Error(`not an identifier: ${name}`);
  }
  const body = methods.map(([name], i) => `target.${name} = fns[${i}];`).join('\n');
  // eslint-disable-next-line no-new-func
  return new Function('fns', `return function assignOwnMethods(target) {\n${body}\n};`)(methods.map(([, fn]) => fn));
}

module.exports = { ownMethodsAssigner };
