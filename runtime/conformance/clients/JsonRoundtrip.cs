// Reads one JSON document on stdin, decodes it with the C# client's LoreKitJson and writes it back
// (tests/test_clients_codecs.py compares the result with Python's json module).
using System;
using System.IO;
using System.Text;
using LoreKit;

static class JsonRoundtrip
{
    static int Main()
    {
        var stdin = new StreamReader(Console.OpenStandardInput(), new UTF8Encoding(false));
        var stdout = new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false));
        try
        {
            stdout.Write(LoreKitJson.Write(LoreKitJson.Read(stdin.ReadToEnd().Trim())) + "\n");
            stdout.Flush();
            return 0;
        }
        catch (LoreKitJsonException e)
        {
            Console.Error.WriteLine(e.Message);
            return 2;
        }
    }
}
