// The shared conformance scenario (runtime/conformance/SCENARIO.md), driven through the C# client the
// Unity wrapper uses. Build: mcs -out:conformance.exe UnityConformance.cs ../../unity/LoreKit/LoreKit*.cs
// Run: mono conformance.exe HOST PORT SCENARIO_JSON LABEL. One JSON line per step on stdout;
// the runner judges them (runtime/conformance/judge.py). Events are pumped with DispatchEvents() in
// a frame loop, exactly as LoreKitBehaviour.Update does in Unity.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;
using System.Threading;
using LoreKit;

static class UnityConformance
{
    static LoreKitClient client;
    static readonly Dictionary<string, List<object>> log = new Dictionary<string, List<object>>();
    static int connectedCount, disconnectedCount, pongCount;
    static Dictionary<string, object> hello;
    static string lastReason;

    static void Emit(Dictionary<string, object> step)
    {
        Console.Out.Write(LoreKitJson.Write(step) + "\n");
        Console.Out.Flush();
    }

    static void Record(string id, Dictionary<string, object> ev)
    {
        if (id == null) return;
        if (!log.ContainsKey(id)) log[id] = new List<object>();
        log[id].Add(ev);
    }

    static List<object> EventsOf(string id)
    {
        return log.ContainsKey(id) ? log[id] : new List<object>();
    }

    static bool Finished(string id)
    {
        foreach (Dictionary<string, object> ev in EventsOf(id))
        {
            var t = (string)ev["type"];
            if (t == "done" || t == "error" || t == "npcs") return true;
        }
        return false;
    }

    // A frame loop: dispatch queued events on this thread until cond() holds or time runs out.
    static bool Pump(Func<bool> cond, double seconds, Action onFrame = null)
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed.TotalSeconds < seconds)
        {
            client.DispatchEvents();
            if (onFrame != null) onFrame();
            if (cond()) return true;
            Thread.Sleep(5);
        }
        return false;
    }

    static Dictionary<string, object> Obj(Dictionary<string, object> d, string key)
    {
        return d[key] as Dictionary<string, object>;
    }

    static int Main(string[] args)
    {
        Console.OutputEncoding = new UTF8Encoding(false);
        string host = args[0];
        int port = int.Parse(args[1]);
        var scenario = (Dictionary<string, object>)LoreKitJson.Read(File.ReadAllText(args[2], Encoding.UTF8));
        string label = args.Length > 3 ? args[3] : "csharp";
        string session = (string)scenario["session_prefix"] + "-" + label;
        var timeouts = Obj(scenario, "timeouts_s");
        double stepTimeout = Convert.ToDouble(timeouts["step"]);

        var idle = Obj(scenario, "idle");
        client = new LoreKitClient(host, port) {
            ClientName = "conformance/" + label, ReconnectMinSeconds = 0.2, ReconnectMaxSeconds = 1,
            KeepAliveSeconds = Convert.ToDouble(idle["keepalive_s"]) };
        client.Connected += h => { connectedCount++; hello = h; };
        client.Disconnected += reason => { disconnectedCount++; lastReason = reason; };
        client.NpcsListed += (id, npcs) =>
        {
            var list = new List<object>();
            foreach (var n in npcs) list.Add(new Dictionary<string, object> { { "id", n.Id }, { "name", n.Name }, { "greeting", n.Greeting }, { "farewell", n.Farewell } });
            Record(id, new Dictionary<string, object> { { "type", "npcs" }, { "npcs", list } });
        };
        client.Token += (id, text) => Record(id, new Dictionary<string, object> { { "type", "token" }, { "text", text } });
        client.Sentence += (id, index, text) => Record(id, new Dictionary<string, object> { { "type", "sentence" }, { "index", index }, { "text", text } });
        client.Done += r => Record(r.Id, new Dictionary<string, object> {
            { "type", "done" }, { "text", r.Text }, { "finish_reason", r.FinishReason }, { "npc", r.Npc },
            { "session", r.Session }, { "completion_tokens", r.CompletionTokens } });
        client.EventReceived += ev =>
        {
            if ((string)ev["type"] != "pong") return;
            pongCount++;
            Record(ev["id"] as string, new Dictionary<string, object> { { "type", "pong" } });
        };
        client.Error += (id, code, message) => Record(id, new Dictionary<string, object> { { "type", "error" }, { "code", code }, { "message", message } });

        var watch = Stopwatch.StartNew();
        client.Connect();
        bool ok = Pump(() => connectedCount > 0, Convert.ToDouble(timeouts["connect"]));
        Emit(new Dictionary<string, object> {
            { "step", "connect" }, { "ok", ok }, { "protocol", hello != null && hello.ContainsKey("protocol") ? hello["protocol"] : null },
            { "server", hello != null && hello.ContainsKey("server") ? hello["server"] : null }, { "elapsed_ms", watch.Elapsed.TotalMilliseconds } });
        if (!ok) { Emit(new Dictionary<string, object> { { "step", "end" } }); return 1; }

        string reqId = client.ListNpcs();
        Pump(() => Finished(reqId), stepTimeout);
        Emit(new Dictionary<string, object> { { "step", "list_npcs" }, { "events", EventsOf(reqId) } });
        string npc = scenario["npc"] as string;
        if (npc == null)
        {
            npc = "missing";
            foreach (Dictionary<string, object> ev in EventsOf(reqId))
            {
                var npcs = ev.ContainsKey("npcs") ? (List<object>)ev["npcs"] : null;
                if (npcs != null && npcs.Count > 0) npc = (string)((Dictionary<string, object>)npcs[0])["id"];
            }
        }

        // The player types the line before saying it: no answer for the typing; the one to an unknown NPC
        // gets its error. A ping fences them: the server answers in order, so after the pong all is in.
        var turn = Obj(scenario, "turn");
        var state = turn["state"] as Dictionary<string, object>;
        var typing = Obj(scenario, "typing");
        string typed = client.Typing(npc, (string)typing["text"], new TurnOptions { Session = session, State = state });
        string typedBad = client.Typing((string)typing["bad_npc"], (string)typing["text"], new TurnOptions { Session = session });
        string fence = client.Ping();
        bool timedOut = !Pump(() => log.ContainsKey(fence), stepTimeout);
        Emit(new Dictionary<string, object> {
            { "step", "typing" }, { "npc", npc }, { "bad_npc", typing["bad_npc"] }, { "id", typed }, { "bad_id", typedBad },
            { "timed_out", timedOut }, { "events", EventsOf(typed) }, { "bad_events", EventsOf(typedBad) } });

        var options = new TurnOptions
        {
            Session = session, MaxTokens = Convert.ToInt32(turn["max_tokens"]), Temperature = Convert.ToDouble(turn["temperature"]),
            State = state,
        };
        watch.Restart();
        string turnId = client.Say(npc, (string)turn["text"], options);
        timedOut = !Pump(() => Finished(turnId), stepTimeout);
        Emit(new Dictionary<string, object> {
            { "step", "turn" }, { "npc", npc }, { "session", session }, { "timed_out", timedOut }, { "events", EventsOf(turnId) },
            { "total_ms", watch.Elapsed.TotalMilliseconds } });

        var cancel = Obj(scenario, "cancel");
        string cancelId = client.Say(npc, (string)cancel["text"], new TurnOptions {
            Session = session, MaxTokens = Convert.ToInt32(cancel["max_tokens"]), Temperature = Convert.ToDouble(cancel["temperature"]) });
        object cancelAfter = null;
        timedOut = !Pump(() => Finished(cancelId), stepTimeout, () =>
        {
            var evs = EventsOf(cancelId);
            if (cancelAfter == null && evs.Count > 0 && (string)((Dictionary<string, object>)evs[0])["type"] == "token")
            {
                cancelAfter = evs.Count;
                client.Cancel(cancelId);
            }
        });
        Emit(new Dictionary<string, object> {
            { "step", "cancel" }, { "npc", npc }, { "session", session }, { "timed_out", timedOut }, { "events", EventsOf(cancelId) },
            { "cancel_sent_after_events", cancelAfter } });

        var unknown = Obj(scenario, "unknown_npc");
        string unknownId = client.Say((string)unknown["npc"], (string)unknown["text"], new TurnOptions { Session = session });
        timedOut = !Pump(() => Finished(unknownId), stepTimeout);
        Emit(new Dictionary<string, object> {
            { "step", "unknown_npc" }, { "npc", unknown["npc"] }, { "timed_out", timedOut }, { "events", EventsOf(unknownId) } });

        // Idle: the server (started with a short idle timeout) must not drop a client that keeps alive.
        int drops = disconnectedCount, pongs = pongCount;
        double idleSeconds = Convert.ToDouble(idle["seconds"]);
        Pump(() => false, idleSeconds);
        string idleId = client.ListNpcs();
        Pump(() => Finished(idleId), stepTimeout);
        Emit(new Dictionary<string, object> {
            { "step", "idle" }, { "seconds", idleSeconds }, { "disconnected", disconnectedCount > drops },
            { "pongs", pongCount - pongs }, { "events", EventsOf(idleId) } });

        // A long turn is in flight when the runner restarts the server: it must still end exactly once.
        int before = connectedCount;
        string inflightId = client.Say(npc, (string)cancel["text"], new TurnOptions {
            Session = session, MaxTokens = Convert.ToInt32(cancel["max_tokens"]) });
        Pump(() => false, 1.0);
        Emit(new Dictionary<string, object> { { "step", "await_restart" } });
        bool reconnected = Pump(() => disconnectedCount > 0 && connectedCount > before, Convert.ToDouble(timeouts["reconnect"]));
        List<object> after = new List<object>();
        if (reconnected)
        {
            string againId = client.ListNpcs();
            Pump(() => Finished(againId), stepTimeout);
            after = EventsOf(againId);
        }
        Pump(() => Finished(inflightId), stepTimeout);
        Pump(() => false, 0.5); // a duplicate final event would show up here
        Emit(new Dictionary<string, object> {
            { "step", "reconnect" }, { "disconnected", disconnectedCount > 0 }, { "reason", lastReason },
            { "reconnected", reconnected }, { "events", after }, { "inflight_events", EventsOf(inflightId) } });
        client.Dispose();
        Emit(new Dictionary<string, object> { { "step", "end" } });
        return 0;
    }
}
