// Small DOM helpers shared by the views. Elements are built from nodes and text, never HTML.

export const $ = (id) => document.getElementById(id);

/** Builds an element; children are nodes or text, never HTML. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? '' : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/**
 * Answers the question the confirm dialog asked last. A dialog's `close` event is delivered in a
 * later task, so a second question can open it before the first one's event arrives: the first
 * is answered from the closed dialog then, and that late event, finding the dialog open again,
 * is not taken as the second one's answer.
 */
let answer = null;

function answered(dialog) {
  const resolve = answer;
  answer = null;
  resolve?.(dialog.returnValue === 'ok');
}

/**
 * Asks in the page's own dialog (not the browser's `confirm()`); resolves whether the person
 * chose `ok`. Escape and Cancel both answer no.
 */
export function confirmDialog(text, ok = 'OK', danger = true) {
  const dialog = $('confirm-dialog');
  dialog.onclose = () => {
    if (!dialog.open) answered(dialog);
  };
  answered(dialog);
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = ok;
  $('confirm-ok').className = danger ? 'danger' : 'primary';
  return new Promise((resolve) => {
    answer = resolve;
    dialog.returnValue = '';
    dialog.showModal();
    $('confirm-cancel').focus();
  });
}

export function time(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}
