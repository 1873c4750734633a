// Rhai colouring for the script editor: Prism's C-like grammar (vendored,
// vendor/prism-*.min.js, MIT) extended with Rhai's keywords, strings and
// functions. Prism only tokenizes here; the tokens become DOM nodes with
// h() (no innerHTML), like every other value on the page.
import { h } from './dom.js';

const Prism = window.Prism;

if (Prism && !Prism.languages.rhai) {
  Prism.languages.rhai = Prism.languages.extend('clike', {
    string: [
      { pattern: /`(?:\\[\s\S]|\$\{(?:[^{}]|\{[^{}]*\})*\}|[^\\`$])*`/, greedy: true },
      { pattern: /"(?:\\[\s\S]|[^\\"\r\n])*"/, greedy: true },
      { pattern: /'(?:\\.|[^\\'\r\n])'/, greedy: true },
    ],
    keyword: /\b(?:as|break|catch|const|continue|do|else|export|fn|for|global|if|import|in|let|loop|private|return|switch|this|throw|try|until|while)\b/,
    boolean: /\b(?:true|false)\b/,
    number: /\b0x[\da-f_]+\b|\b0o[0-7_]+\b|\b0b[01_]+\b|(?:\b\d[\d_]*(?:\.[\d_]*)?|\B\.\d[\d_]*)(?:e[+-]?\d+)?/i,
    operator: /[-+*\/%^&|<>!=]=?|\?\?|\?\.|\.\.=?|&&|\|\||=>|::|[#@]/,
  });
  Prism.languages.insertBefore('rhai', 'keyword', {
    property: { pattern: /\b[a-z_]\w*(?=\s*:(?!:))/i },
  });
}

function nodes(tokens) {
  return tokens.map((t) => (typeof t === 'string'
    ? t
    : h('span', { class: `token ${t.type}${t.alias ? ` ${[].concat(t.alias).join(' ')}` : ''}` },
      Array.isArray(t.content) ? nodes(t.content) : typeof t.content === 'string' ? t.content : nodes([t.content]))));
}

// The source as coloured nodes; plain text when Prism did not load.
export function colour(source) {
  if (!Prism || !Prism.languages.rhai) return [source];
  return nodes(Prism.tokenize(source, Prism.languages.rhai));
}
