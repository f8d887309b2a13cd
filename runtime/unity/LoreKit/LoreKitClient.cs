// LoreKit game-protocol client for C# (.NET Standard 2.0 base library only; Unity 2018.3+).
// Protocol: runtime/PROTOCOL.md (newline-delimited JSON over TCP, version 1).
//
// A background thread connects, reads and reconnects; events are queued and raised on the thread
// that calls DispatchEvents() (LoreKitBehaviour calls it from Update, so Unity handlers run on the
// main thread). Set DispatchOnReaderThread = true to raise them at once on the reader thread.
using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.IO;
using System.Net.Sockets;
using System.Text;
using System.Threading;

namespace LoreKit
{
    public sealed class NpcInfo
    {
        public string Id;
        public string Name;
        public string Greeting;
        public string Farewell;
    }

    public sealed class TurnOptions
    {
        public string Session;                    // null: the client's DefaultSession
        public IDictionary<string, object> State; // game state for this turn (location, time, flags, ...)
        public int? MaxTokens;
        public double? Temperature;
        public string Stream;                     // "tokens" (default), "sentences" or "none"
    }

    public sealed class TurnReply
    {
        public string Id;
        public string Npc;
        public string Session;
        public string Text;
        public string FinishReason;               // "stop", "length" or "cancelled"
        public long PromptTokens;
        public long CachedTokens;
        public long CompletionTokens;
        public Dictionary<string, object> Raw;    // the whole done event (timings, future fields)
    }

    public sealed class LoreKitClient : IDisposable
    {
        public const int Protocol = 1;
        public const string Version = "0.1.0";

        public event Action<Dictionary<string, object>> Connected;     // the server's hello event
        public event Action<string> Disconnected;                      // reason
        public event Action<string, List<NpcInfo>> NpcsListed;         // request id, NPCs
        public event Action<string, string> Token;                     // turn id, text piece
        public event Action<string, int, string> Sentence;             // turn id, index, sentence
        public event Action<TurnReply> Done;
        public event Action<string, string, string> Error;             // id (null for connection-level), code, message
        public event Action<Dictionary<string, object>> Notification;  // reloaded / reload_error
        public event Action<Dictionary<string, object>> EventReceived; // every event, raw

        public readonly string Host;
        public readonly int Port;
        public readonly string AuthToken;
        public string ClientName = "lorekit-csharp/" + Version;
        public string DefaultSession = "default";
        public bool DispatchOnReaderThread;
        public double ReconnectMinSeconds = 0.5;
        public double ReconnectMaxSeconds = 5.0;
        /// <summary>Ping after this many idle seconds (the server closes connections silent for 300 s); 0: never.</summary>
        public double KeepAliveSeconds = 60.0;

        readonly object gate = new object();
        readonly ConcurrentQueue<Action> events = new ConcurrentQueue<Action>();
        readonly Dictionary<string, Pending> pending = new Dictionary<string, Pending>();
        readonly List<KeyValuePair<string, string>> queued = new List<KeyValuePair<string, string>>();
        TcpClient tcp;
        NetworkStream stream;
        Thread thread;
        Timer keepAlive;
        DateTime lastSend = DateTime.UtcNow;
        volatile bool running;
        bool connected;
        string helloId;
        int nextId;

        sealed class Pending
        {
            public string Kind;
            public bool Sent;
        }

        public LoreKitClient(string host = "127.0.0.1", int port = 7861, string token = null)
        {
            Host = host;
            Port = port;
            AuthToken = token;
        }

        public bool IsConnected { get { lock (gate) return connected; } }

        /// <summary>Start the background connection (returns at once; Connected fires when the server answers).</summary>
        public void Connect()
        {
            if (running) return;
            running = true;
            thread = new Thread(Run) { IsBackground = true, Name = "LoreKitClient" };
            thread.Start();
            if (KeepAliveSeconds > 0) keepAlive = new Timer(_ => KeepAlive(), null, 250, 250);
        }

        void KeepAlive()
        {
            bool idle;
            lock (gate) idle = connected && (DateTime.UtcNow - lastSend).TotalSeconds >= KeepAliveSeconds;
            if (idle) Ping();
        }

        public string ListNpcs() { return Request("list_npcs", null); }
        public string Ping() { return Request("ping", null); }
        public string Status() { return Request("status", null); }

        public string Reset(string npc, string session = null)
        {
            return Request("reset", new Dictionary<string, object> { { "npc", npc }, { "session", session ?? DefaultSession } });
        }

        /// <summary>The player says <paramref name="text"/> to <paramref name="npc"/>; returns the turn id.</summary>
        public string Say(string npc, string text, TurnOptions options = null)
        {
            options = options ?? new TurnOptions();
            var fields = new Dictionary<string, object> { { "npc", npc }, { "text", text }, { "session", options.Session ?? DefaultSession } };
            if (options.State != null) fields["state"] = options.State;
            if (options.MaxTokens.HasValue) fields["max_tokens"] = options.MaxTokens.Value;
            if (options.Temperature.HasValue) fields["temperature"] = options.Temperature.Value;
            if (options.Stream != null) fields["stream"] = options.Stream;
            return Request("turn", fields);
        }

        /// <summary>The line the player has typed so far: send it on each pause or word, with the options the turn
        /// will carry (Session, State; the rest is not sent). The server processes it ahead, so the reply starts
        /// sooner. No answer comes; bad input raises Error with the returned id.</summary>
        public string Typing(string npc, string text, TurnOptions options = null)
        {
            options = options ?? new TurnOptions();
            var fields = new Dictionary<string, object> { { "npc", npc }, { "text", text }, { "session", options.Session ?? DefaultSession } };
            if (options.State != null) fields["state"] = options.State;
            return Request("typing", fields, false);
        }

        /// <summary>Stop a turn; it then ends with Done and FinishReason "cancelled".</summary>
        public void Cancel(string turnId)
        {
            Send(null, LoreKitJson.Write(new Dictionary<string, object> { { "type", "cancel" }, { "id", turnId } }));
        }

        /// <summary>Raise queued events on this thread (call once a frame); returns how many ran.</summary>
        public int DispatchEvents(int max = int.MaxValue)
        {
            int n = 0;
            Action action;
            while (n < max && events.TryDequeue(out action))
            {
                action();
                n++;
            }
            return n;
        }

        public void Dispose()
        {
            running = false;
            if (keepAlive != null) keepAlive.Dispose();
            CloseSocket();
            if (thread != null && thread != Thread.CurrentThread) thread.Join(2000);
            FailSent("client closed");
        }

        // A request that gets no answer (typing) is not pending: nothing ends it, so a drop reports nothing for it.
        string Request(string type, Dictionary<string, object> fields, bool answered = true)
        {
            var msg = fields ?? new Dictionary<string, object>();
            string id;
            lock (gate)
            {
                id = "cs-" + (++nextId);
                if (answered) pending[id] = new Pending { Kind = type };
            }
            msg["type"] = type;
            msg["id"] = id;
            Send(id, LoreKitJson.Write(msg));
            return id;
        }

        // Write now when connected; otherwise keep the line until the (re)connection's hello is answered.
        void Send(string id, string line)
        {
            lock (gate)
            {
                if (!connected) { queued.Add(new KeyValuePair<string, string>(id, line)); return; }
                WriteLine(id, line);
            }
        }

        void WriteLine(string id, string line) // caller holds gate
        {
            Pending p;
            if (id != null && pending.TryGetValue(id, out p)) p.Sent = true;
            try
            {
                byte[] bytes = Encoding.UTF8.GetBytes(line + "\n");
                stream.Write(bytes, 0, bytes.Length);
                lastSend = DateTime.UtcNow;
            }
            catch (Exception e)
            {
                // The reader thread sees the broken connection too and reconnects.
                if (e is IOException || e is ObjectDisposedException || e is SocketException || e is NullReferenceException) CloseSocket();
                else throw;
            }
        }

        void Run()
        {
            double backoff = ReconnectMinSeconds;
            while (running)
            {
                string reason = Session(ref backoff);
                bool wasConnected;
                lock (gate) { wasConnected = connected || helloId != null; connected = false; helloId = null; }
                CloseSocket();
                FailSent(reason);
                if (wasConnected && running) Post(() => { var h = Disconnected; if (h != null) h(reason); });
                if (!running) break;
                Thread.Sleep(TimeSpan.FromSeconds(backoff));
                backoff = Math.Min(backoff * 2, ReconnectMaxSeconds);
            }
        }

        // One connection: connect, hello, read lines until it breaks. Returns why it ended.
        string Session(ref double backoff)
        {
            try
            {
                var client = new TcpClient { NoDelay = true };
                client.Connect(Host, Port);
                lock (gate)
                {
                    tcp = client;
                    stream = client.GetStream();
                    helloId = "cs-hello-" + (++nextId);
                    var hello = new Dictionary<string, object> { { "type", "hello" }, { "id", helloId }, { "version", Protocol }, { "client", ClientName } };
                    if (AuthToken != null) hello["token"] = AuthToken;
                    WriteLine(null, LoreKitJson.Write(hello));
                }
                ReadLines(ref backoff);
                return "server closed the connection";
            }
            catch (Exception e)
            {
                return "connection failed: " + e.Message;
            }
        }

        void ReadLines(ref double backoff)
        {
            var buffer = new byte[16384];
            var line = new MemoryStream();
            NetworkStream s;
            lock (gate) s = stream;
            while (running && s != null)
            {
                int n = s.Read(buffer, 0, buffer.Length);
                if (n <= 0) return;
                int start = 0;
                for (int i = 0; i < n; i++)
                {
                    if (buffer[i] != (byte)'\n') continue;
                    line.Write(buffer, start, i - start);
                    // Decode whole lines only, so a multi-byte character split across reads stays intact.
                    string text = Encoding.UTF8.GetString(line.GetBuffer(), 0, (int)line.Length);
                    line.SetLength(0);
                    start = i + 1;
                    if (HandleLine(text)) backoff = ReconnectMinSeconds;
                }
                line.Write(buffer, start, n - start);
            }
        }

        // Returns true when this line completed the handshake.
        bool HandleLine(string text)
        {
            if (text.Trim().Length == 0) return false;
            Dictionary<string, object> ev;
            try { ev = LoreKitJson.Read(text) as Dictionary<string, object>; }
            catch (LoreKitJsonException e)
            {
                Post(() => RaiseError(null, "client_bad_json", e.Message));
                return false;
            }
            if (ev == null) return false;
            string type = Str(ev, "type");
            string id = ev.ContainsKey("id") && ev["id"] != null ? Convert.ToString(ev["id"], System.Globalization.CultureInfo.InvariantCulture) : null;
            bool handshake = false;
            lock (gate)
            {
                Pending p;
                if (id != null && pending.TryGetValue(id, out p) && IsFinal(p.Kind, type)) pending.Remove(id);
                if (type == "hello" && id != null && id == helloId)
                {
                    connected = true;
                    handshake = true;
                    foreach (var item in queued) WriteLine(item.Key, item.Value);
                    queued.Clear();
                }
            }
            if (type == "error" && Str(ev, "code") == "unauthorized") running = false; // a wrong token will not get better
            Post(() => Raise(type, id, ev, handshake));
            return handshake;
        }

        static bool IsFinal(string kind, string type)
        {
            if (type == "error") return true;
            switch (kind)
            {
                case "turn": return type == "done";
                case "list_npcs": return type == "npcs";
                case "ping": return type == "pong";
                default: return type == kind; // status, reset, hello
            }
        }

        void Raise(string type, string id, Dictionary<string, object> ev, bool handshake)
        {
            var all = EventReceived;
            if (all != null) all(ev);
            if (handshake) { var h = Connected; if (h != null) h(ev); return; }
            switch (type)
            {
                case "token": { var h = Token; if (h != null) h(id, Str(ev, "text")); break; }
                case "sentence": { var h = Sentence; if (h != null) h(id, (int)Num(ev, "index"), Str(ev, "text")); break; }
                case "done": { var h = Done; if (h != null) h(ToReply(id, ev)); break; }
                case "npcs": { var h = NpcsListed; if (h != null) h(id, ToNpcs(ev)); break; }
                case "error": RaiseError(id, Str(ev, "code"), Str(ev, "message")); break;
                case "reloaded":
                case "reload_error": { var h = Notification; if (h != null) h(ev); break; }
            }
        }

        void RaiseError(string id, string code, string message)
        {
            var h = Error;
            if (h != null) h(id, code, message);
        }

        void Post(Action action)
        {
            if (DispatchOnReaderThread) action();
            else events.Enqueue(action);
        }

        void FailSent(string reason)
        {
            var failed = new List<string>();
            lock (gate)
            {
                foreach (var kv in pending) if (kv.Value.Sent) failed.Add(kv.Key);
                foreach (var id in failed) pending.Remove(id);
            }
            failed.Sort(StringComparer.Ordinal);
            foreach (var id in failed)
            {
                string turnId = id;
                Post(() => RaiseError(turnId, "disconnected", reason));
            }
        }

        void CloseSocket()
        {
            lock (gate)
            {
                if (tcp != null) ((IDisposable)tcp).Dispose(); // closes the socket and unblocks the reader
                tcp = null;
                stream = null;
            }
        }

        static TurnReply ToReply(string id, Dictionary<string, object> ev)
        {
            var tokens = ev.ContainsKey("tokens") ? ev["tokens"] as Dictionary<string, object> : null;
            return new TurnReply
            {
                Id = id, Npc = Str(ev, "npc"), Session = Str(ev, "session"), Text = Str(ev, "text"),
                FinishReason = Str(ev, "finish_reason"), Raw = ev,
                PromptTokens = (long)Num(tokens, "prompt"), CachedTokens = (long)Num(tokens, "cached"),
                CompletionTokens = (long)Num(tokens, "completion"),
            };
        }

        static List<NpcInfo> ToNpcs(Dictionary<string, object> ev)
        {
            var result = new List<NpcInfo>();
            var list = ev.ContainsKey("npcs") ? ev["npcs"] as List<object> : null;
            if (list == null) return result;
            foreach (var item in list)
            {
                var d = item as Dictionary<string, object>;
                if (d != null) result.Add(new NpcInfo
                {
                    Id = Str(d, "id"), Name = Str(d, "name"), Greeting = Str(d, "greeting"),
                    Farewell = Str(d, "farewell"),
                });
            }
            return result;
        }

        static string Str(Dictionary<string, object> d, string key)
        {
            object v;
            return d != null && d.TryGetValue(key, out v) ? v as string : null;
        }

        static double Num(Dictionary<string, object> d, string key)
        {
            object v;
            if (d == null || !d.TryGetValue(key, out v) || v == null) return 0;
            return v is long ? (long)v : v is double ? (double)v : 0;
        }
    }
}
