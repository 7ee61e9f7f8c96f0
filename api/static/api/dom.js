/**
 * The few DOM helpers the demo page renders with. The page updates its elements in place rather than
 * rebuilding them, so that a field being typed in or a focused button survives every push.
 */

/** A new element: `attrs` are attributes, except `on<event>` (listeners); `children` are nodes or text. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

export function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/** Set an attribute, or remove it for null / false. */
export function setAttr(node, name, value) {
  if (value === null || value === false) node.removeAttribute(name);
  else if (node.getAttribute(name) !== String(value)) node.setAttribute(name, value);
}

const keys = new WeakMap(); // node -> the key of the item it shows

/**
 * Make `parent`'s children show `items`, in order: the node of an item already shown is kept and
 * updated (`update(node, item)`), a new item gets `create(item)`, the nodes of items gone are removed.
 * A node is moved only when it is out of place, because moving an element takes its focus away.
 * Returns true when a removed node held the focus, for the caller to put it somewhere sensible.
 */
export function syncChildren(parent, items, keyOf, create, update) {
  const existing = new Map([...parent.children].map((node) => [keys.get(node), node]));
  items.forEach((item, index) => {
    const key = keyOf(item);
    let node = existing.get(key);
    if (node) existing.delete(key);
    else {
      node = create(item);
      keys.set(node, key);
    }
    update(node, item);
    if (parent.children[index] !== node) parent.insertBefore(node, parent.children[index] ?? null);
  });
  let focusLost = false;
  for (const node of existing.values()) {
    focusLost ||= node.contains(document.activeElement);
    node.remove();
  }
  return focusLost;
}

/** The `<option>`s of a `<select>`, as `[{value, label, disabled?}]`, and its selected value. */
export function setOptions(select, options, value) {
  syncChildren(
    select,
    options,
    (option) => option.value,
    (option) => el("option", { value: option.value }),
    (node, option) => {
      setText(node, option.label);
      node.disabled = Boolean(option.disabled);
    },
  );
  // Compared with the chosen option, not select.value: once the chosen option is gone, none is.
  if (select.selectedOptions[0]?.value !== value) select.value = value;
}
