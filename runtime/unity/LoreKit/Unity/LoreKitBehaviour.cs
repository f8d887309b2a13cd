// Unity wrapper: owns a LoreKitClient and raises its events on the main thread, from Update.
// Needs UnityEngine, so it is not compiled outside Unity (the console conformance program uses
// LoreKitClient directly and pumps DispatchEvents() the same way).
using System.Collections.Generic;
using UnityEngine;
using UnityEngine.Events;

namespace LoreKit.Unity
{
    [System.Serializable] public class StringEvent : UnityEvent<string> { }                // reason
    [System.Serializable] public class TokenEvent : UnityEvent<string, string> { }       // turn id, text
    [System.Serializable] public class SentenceEvent : UnityEvent<string, int, string> { } // turn id, index, text
    [System.Serializable] public class ErrorEvent : UnityEvent<string, string, string> { } // id, code, message

    [DisallowMultipleComponent]
    public sealed class LoreKitBehaviour : MonoBehaviour
    {
        [Tooltip("Address of `lorekit serve` (loopback by default).")]
        public string host = "127.0.0.1";
        public int port = 7861;
        [Tooltip("Only when the server was started with --token.")]
        public string token = "";
        [Tooltip("History is kept per (NPC, session): use your save-game id.")]
        public string session = "default";
        [Tooltip("Keep this object (and the connection) across scene loads.")]
        public bool dontDestroyOnLoad = true;

        public UnityEvent onConnected = new UnityEvent();
        public StringEvent onDisconnected = new StringEvent();
        public TokenEvent onToken = new TokenEvent();
        public SentenceEvent onSentence = new SentenceEvent();
        public ErrorEvent onError = new ErrorEvent();

        /// <summary>The client itself: subscribe to its C# events (Done, NpcsListed, ...) for everything else.</summary>
        public LoreKitClient Client { get; private set; }

        void Awake()
        {
            if (dontDestroyOnLoad) DontDestroyOnLoad(gameObject);
            Client = new LoreKitClient(host, port, string.IsNullOrEmpty(token) ? null : token)
            {
                DefaultSession = session,
                ClientName = "unity/" + Application.productName,
            };
            Client.Connected += _ => onConnected.Invoke();
            Client.Disconnected += reason => onDisconnected.Invoke(reason);
            Client.Token += (id, text) => onToken.Invoke(id, text);
            Client.Sentence += (id, index, text) => onSentence.Invoke(id, index, text);
            Client.Error += (id, code, message) =>
            {
                Debug.LogWarning("LoreKit " + code + ": " + message);
                onError.Invoke(id, code, message);
            };
            Client.Connect();
        }

        void Update()
        {
            Client.DispatchEvents(); // handlers run here, on the main thread
        }

        void OnDestroy()
        {
            if (Client != null) Client.Dispose();
        }

        public string Say(string npc, string text, IDictionary<string, object> state = null)
        {
            return Client.Say(npc, text, new TurnOptions { State = state });
        }

        /// <summary>The line the player has typed so far (each pause or word), with the state the turn will carry.</summary>
        public string Typing(string npc, string text, IDictionary<string, object> state = null)
        {
            return Client.Typing(npc, text, new TurnOptions { State = state });
        }

        public void Cancel(string turnId)
        {
            Client.Cancel(turnId);
        }
    }
}
