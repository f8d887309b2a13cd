// A small JSON reader/writer for the LoreKit protocol (.NET Standard 2.0 base library only:
// System.Text.Json is not part of it, and Unity projects should not need a NuGet package).
// Objects read as Dictionary<string, object>, arrays as List<object>, numbers as long (integers)
// or double, plus string, bool and null. Numbers are written with the invariant culture, so a
// game running with a German locale still sends 0.7 and not 0,7.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace LoreKit
{
    public sealed class LoreKitJsonException : Exception
    {
        public LoreKitJsonException(string message) : base(message) { }
    }

    public static class LoreKitJson
    {
        public static string Write(object value)
        {
            var sb = new StringBuilder(128);
            WriteValue(sb, value, 0);
            return sb.ToString();
        }

        public static object Read(string text)
        {
            var reader = new Reader(text);
            object value = reader.ReadValue(0);
            reader.SkipWhitespace();
            if (reader.Pos != text.Length) throw reader.Fail("trailing characters");
            return value;
        }

        static void WriteValue(StringBuilder sb, object value, int depth)
        {
            if (depth > 64) throw new LoreKitJsonException("nesting too deep");
            if (value == null) { sb.Append("null"); return; }
            var s = value as string;
            if (s != null) { WriteString(sb, s); return; }
            if (value is bool) { sb.Append((bool)value ? "true" : "false"); return; }
            if (value is int || value is long || value is short || value is byte || value is uint || value is ushort || value is sbyte)
            {
                sb.Append(Convert.ToInt64(value, CultureInfo.InvariantCulture).ToString(CultureInfo.InvariantCulture));
                return;
            }
            if (value is ulong) { sb.Append(((ulong)value).ToString(CultureInfo.InvariantCulture)); return; }
            if (value is double || value is float || value is decimal)
            {
                double d = Convert.ToDouble(value, CultureInfo.InvariantCulture);
                if (double.IsNaN(d) || double.IsInfinity(d)) throw new LoreKitJsonException("cannot write " + d);
                sb.Append(d.ToString("R", CultureInfo.InvariantCulture));
                return;
            }
            var dict = value as IDictionary;
            if (dict != null) { WriteObject(sb, dict, depth); return; }
            var list = value as IEnumerable;
            if (list != null) { WriteArray(sb, list, depth); return; }
            WriteString(sb, Convert.ToString(value, CultureInfo.InvariantCulture));
        }

        static void WriteObject(StringBuilder sb, IDictionary dict, int depth)
        {
            sb.Append('{');
            bool first = true;
            foreach (DictionaryEntry entry in dict)
            {
                if (!first) sb.Append(',');
                first = false;
                WriteString(sb, Convert.ToString(entry.Key, CultureInfo.InvariantCulture));
                sb.Append(':');
                WriteValue(sb, entry.Value, depth + 1);
            }
            sb.Append('}');
        }

        static void WriteArray(StringBuilder sb, IEnumerable list, int depth)
        {
            sb.Append('[');
            bool first = true;
            foreach (object item in list)
            {
                if (!first) sb.Append(',');
                first = false;
                WriteValue(sb, item, depth + 1);
            }
            sb.Append(']');
        }

        static void WriteString(StringBuilder sb, string s)
        {
            sb.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    case '\b': sb.Append("\\b"); break;
                    case '\f': sb.Append("\\f"); break;
                    default:
                        // Control characters, and the two line separators some JSON readers choke on.
                        if (c < 0x20 || c == '\u2028' || c == '\u2029') sb.Append("\\u").Append(((int)c).ToString("x4"));
                        else sb.Append(c);
                        break;
                }
            }
            sb.Append('"');
        }

        sealed class Reader
        {
            readonly string text;
            public int Pos;

            public Reader(string text) { this.text = text; }

            public LoreKitJsonException Fail(string what)
            {
                return new LoreKitJsonException(what + " at character " + Pos);
            }

            public void SkipWhitespace()
            {
                while (Pos < text.Length && (text[Pos] == ' ' || text[Pos] == '\t' || text[Pos] == '\n' || text[Pos] == '\r')) Pos++;
            }

            public object ReadValue(int depth)
            {
                if (depth > 64) throw Fail("nesting too deep");
                SkipWhitespace();
                if (Pos >= text.Length) throw Fail("unexpected end");
                char c = text[Pos];
                if (c == '{') return ReadObject(depth);
                if (c == '[') return ReadArray(depth);
                if (c == '"') return ReadString();
                if (Literal("true")) return true;
                if (Literal("false")) return false;
                if (Literal("null")) return null;
                if (c == '-' || (c >= '0' && c <= '9')) return ReadNumber();
                throw Fail("unexpected character '" + c + "'");
            }

            bool Literal(string word)
            {
                if (string.CompareOrdinal(text, Pos, word, 0, word.Length) != 0) return false;
                Pos += word.Length;
                return true;
            }

            void Expect(char c)
            {
                SkipWhitespace();
                if (Pos >= text.Length || text[Pos] != c) throw Fail("expected '" + c + "'");
                Pos++;
            }

            Dictionary<string, object> ReadObject(int depth)
            {
                var obj = new Dictionary<string, object>();
                Pos++;
                SkipWhitespace();
                if (Pos < text.Length && text[Pos] == '}') { Pos++; return obj; }
                while (true)
                {
                    SkipWhitespace();
                    if (Pos >= text.Length || text[Pos] != '"') throw Fail("expected a key");
                    string key = ReadString();
                    Expect(':');
                    obj[key] = ReadValue(depth + 1);
                    SkipWhitespace();
                    if (Pos < text.Length && text[Pos] == ',') { Pos++; continue; }
                    Expect('}');
                    return obj;
                }
            }

            List<object> ReadArray(int depth)
            {
                var list = new List<object>();
                Pos++;
                SkipWhitespace();
                if (Pos < text.Length && text[Pos] == ']') { Pos++; return list; }
                while (true)
                {
                    list.Add(ReadValue(depth + 1));
                    SkipWhitespace();
                    if (Pos < text.Length && text[Pos] == ',') { Pos++; continue; }
                    Expect(']');
                    return list;
                }
            }

            string ReadString()
            {
                var sb = new StringBuilder();
                Pos++; // opening quote
                while (true)
                {
                    if (Pos >= text.Length) throw Fail("unterminated string");
                    char c = text[Pos++];
                    if (c == '"') return sb.ToString();
                    if (c != '\\') { sb.Append(c); continue; }
                    if (Pos >= text.Length) throw Fail("unterminated escape");
                    char e = text[Pos++];
                    switch (e)
                    {
                        case '"': sb.Append('"'); break;
                        case '\\': sb.Append('\\'); break;
                        case '/': sb.Append('/'); break;
                        case 'b': sb.Append('\b'); break;
                        case 'f': sb.Append('\f'); break;
                        case 'n': sb.Append('\n'); break;
                        case 'r': sb.Append('\r'); break;
                        case 't': sb.Append('\t'); break;
                        case 'u':
                            int code;
                            if (Pos + 4 > text.Length || !int.TryParse(text.Substring(Pos, 4), NumberStyles.HexNumber, CultureInfo.InvariantCulture, out code))
                                throw Fail("bad \\u escape");
                            sb.Append((char)code); // surrogate pairs arrive as two escapes: UTF-16 keeps them as is
                            Pos += 4;
                            break;
                        default: throw Fail("bad escape");
                    }
                }
            }

            object ReadNumber()
            {
                int start = Pos;
                bool isFloat = false;
                if (text[Pos] == '-') Pos++;
                while (Pos < text.Length)
                {
                    char c = text[Pos];
                    if (c >= '0' && c <= '9') { Pos++; continue; }
                    if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') { isFloat = true; Pos++; continue; }
                    break;
                }
                string s = text.Substring(start, Pos - start);
                long l;
                if (!isFloat && long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out l)) return l;
                double d;
                if (double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out d)) return d;
                throw Fail("bad number '" + s + "'");
            }
        }
    }
}
