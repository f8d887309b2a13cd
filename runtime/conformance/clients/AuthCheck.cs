// Token check for the C# client: mono AuthCheck.exe HOST PORT TOKEN. A wrong token must end in
// Error(..., "unauthorized") and no reconnect loop; the right token must connect and list NPCs.
// Prints one JSON line: {"wrong": {...}, "right": {...}}.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Threading;
using LoreKit;

static class AuthCheck
{
    static Dictionary<string, object> Try(string host, int port, string token, double seconds)
    {
        int connects = 0, attempts = 0;
        object npcs = null;
        var errors = new List<object>();
        var client = new LoreKitClient(host, port, token) { ReconnectMinSeconds = 0.1, ReconnectMaxSeconds = 0.2 };
        client.Connected += _ => { connects++; client.ListNpcs(); };
        client.Disconnected += _ => attempts++;
        client.Error += (id, code, message) => errors.Add(code);
        client.NpcsListed += (id, list) => npcs = list.Count;
        client.Connect();
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed.TotalSeconds < seconds && npcs == null)
        {
            client.DispatchEvents();
            Thread.Sleep(10);
        }
        client.Dispose();
        client.DispatchEvents();
        return new Dictionary<string, object> { { "connects", connects }, { "errors", errors }, { "npcs", npcs }, { "drops", attempts } };
    }

    static int Main(string[] args)
    {
        int port = int.Parse(args[1]);
        var result = new Dictionary<string, object> {
            { "wrong", Try(args[0], port, "wrong-" + args[2], 2) }, { "right", Try(args[0], port, args[2], 30) } };
        Console.Out.Write(LoreKitJson.Write(result) + "\n");
        return 0;
    }
}
